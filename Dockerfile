# The toma image for those who build with Docker: the same files, user and entrypoint as
# `make image` (which needs no Docker), because the same tool lays them out. The final stage
# starts from nothing: the release binary, the glibc libraries it links, the CA bundle and a
# passwd entry for 65532, taken from the pinned build image. No shell.
#
#   docker build -t registry.example.com/toma:0.1.0 .
#
# Only the build stage has a base, pinned by digest (bump tag and digest together); the result
# is FROM scratch.

FROM rust:1.95-bookworm@sha256:6258907abe69656e41cd992e0b705cdcfabcbbe3db374f92ed2d47121282d4a1 AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p toma \
    && cargo build --release --locked -p toma-image \
    && target/release/toma-image --binary target/release/toma --rootfs /rootfs

FROM scratch
COPY --from=build /rootfs/ /
USER 65532:65532
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
EXPOSE 8080
ENTRYPOINT ["/toma", "run"]
