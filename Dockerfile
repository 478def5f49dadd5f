# STUB: container packaging (a slim non-root image, published tags, the image
# the Helm chart and the injection webhook use) comes in a later packaging
# issue, not yet filed. Until then this builds a working image from the
# checkout, but nothing publishes or tests it.
#
#   docker build -t qrux:dev .
#   docker run --rm -p 8443:8443/udp -v $PWD/cfg:/etc/qrux qrux:dev

FROM debian:bookworm AS build
WORKDIR /src
# deps.sh also installs the test peers (Chromium, nginx, ...); the packaging
# issue will split build and test dependencies.
COPY scripts/deps.sh scripts/deps.sh
RUN scripts/deps.sh && rm -rf /var/lib/apt/lists/*
COPY . .
RUN cmake -S . -B /build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DQRUX_WERROR=ON \
    && cmake --build /build -j"$(nproc)" --target qrux

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
       libngtcp2-16 libngtcp2-crypto-gnutls8 libnghttp3-9 libnghttp2-14 libgnutls30 libssl3 \
       libuv1 libcyaml1 libyaml-0-2 libmicrohttpd12 libjansson4 libbpf1 ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /build/qrux /usr/local/bin/qrux
USER 65532:65532
EXPOSE 8443/udp
ENTRYPOINT ["/usr/local/bin/qrux"]
CMD ["--config", "/etc/qrux/qrux.yaml"]
