#!/bin/sh
# example-secrets.sh [DIR]: makes the files the example configs in DIR
# (default config/examples) point at, so `qrux check` and `qrux --config`
# run on them as given:
#   certs/cert.pem, certs/key.pem   a self-signed certificate (scripts/make-cert.sh)
#   admin-token/token               a random admin bearer token
#   ticket/ticket.key               64 random bytes (server.ticket_key_file)
# Files already there are kept. In Kubernetes these come from Secrets
# mounted beside the ConfigMap; the paths are relative to the config file.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
dir=${1:-$here/../config/examples}
mkdir -p "$dir/certs" "$dir/admin-token" "$dir/ticket"
if [ ! -s "$dir/certs/cert.pem" ] || [ ! -s "$dir/certs/key.pem" ]; then
    "$here/make-cert.sh" "$dir/certs/cert.pem" "$dir/certs/key.pem"
fi
umask 077
if [ ! -s "$dir/admin-token/token" ]; then
    head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$dir/admin-token/token"
fi
if [ ! -s "$dir/ticket/ticket.key" ]; then
    head -c 64 /dev/urandom >"$dir/ticket/ticket.key"
fi
echo "example secrets in $dir: certs/ admin-token/ ticket/"
