# qrux's container image: one image for the three roles,
#
#   qrux --config /etc/qrux/qrux.yaml      the proxy (the default command)
#   qrux xdp ...                           the XDP program's loader
#   qrux inject ...                        the sidecar injection
#
# Built with Docker (`docker build -t qrux .`) or, without a Docker engine,
# with buildah as the `image` test does (scripts/image.sh build). The README's
# "Container image" section says how to run it. Packages come from
# scripts/deps.sh in both stages, so make, CI and this file install the same.

# Build: compiler, CMake and the -dev libraries only (no test peers).
FROM debian:bookworm AS build
COPY scripts/deps.sh /tmp/deps.sh
RUN /tmp/deps.sh build && apt-get clean && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cmake -S . -B /build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DQRUX_WERROR=ON \
    && cmake --build /build -j"$(nproc)" --target qrux \
    && strip -o /qrux /build/qrux

# Runtime: bookworm-slim, the shared libraries qrux links, the binary.
FROM debian:bookworm-slim
COPY scripts/deps.sh /tmp/deps.sh
RUN /tmp/deps.sh runtime \
    && apt-get clean \
    && rm -rf /tmp/deps.sh /var/lib/apt/lists/* /var/log/apt /var/log/dpkg.log \
       /var/cache/debconf/*-old
COPY --from=build /qrux /usr/local/bin/qrux

# The version from CMakeLists.txt and the source from the checkout's git
# remote, passed by scripts/image.sh (docker build: --build-arg).
ARG QRUX_VERSION=0.1.0
ARG QRUX_SOURCE=""
LABEL org.opencontainers.image.title="qrux" \
      org.opencontainers.image.description="HTTP/3 (QUIC) terminating sidecar proxy" \
      org.opencontainers.image.source="${QRUX_SOURCE}" \
      org.opencontainers.image.version="${QRUX_VERSION}" \
      org.opencontainers.image.licenses="MIT"

# A fixed non-root uid/gid (the "nonroot" id of distroless images): keys
# mounted into the container must be readable by it (mode 0400, owner 65532).
USER 65532:65532
# 8443/udp HTTP/3, 8443/tcp the HTTPS fallback, 9901/tcp the admin server
# (probes, metrics). No HEALTHCHECK: Kubernetes probes /livez and /readyz.
EXPOSE 8443/udp 8443/tcp 9901/tcp
ENTRYPOINT ["/usr/local/bin/qrux"]
CMD ["--config", "/etc/qrux/qrux.yaml"]
