# syntax=docker/dockerfile:1
# The toma image: the release binary on a distroless base, nothing else.
#
#   docker build -t registry.example.com/toma:0.1.0 .

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin toma \
    && cp target/release/toma /toma

# glibc, libgcc and CA certificates; runs as nonroot (65532) with no shell.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /toma /toma
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/toma", "run"]
