# syntax=docker/dockerfile:1
# One image for every Chatty binary: chat-api, edge-proxy and the chatty CLI.
#   docker build -t chatty:latest .
# Kubernetes picks the binary with `command:` (see k8s/base).

FROM rust:1-bookworm AS builder
# pingora-core builds zlib-ng with cmake.
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# Build the whole workspace at once (cargo unifies features across it), then copy the
# binaries out of the cache-mounted target directory.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --workspace --locked \
 && mkdir -p /out \
 && cp target/release/chat-api target/release/edge-proxy target/release/chatty /out/

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 chatty \
 && useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent --no-create-home \
      --shell /usr/sbin/nologin chatty
COPY --from=builder /out/chat-api /out/edge-proxy /out/chatty /usr/local/bin/
USER 10001:10001
WORKDIR /tmp
# 8080 edge HTTP, 8081 chat-api HTTP (+ /metrics), 9090 edge metrics/health.
EXPOSE 8080 8081 9090
# Default: an all-in-one local stack; Kubernetes overrides this per container.
CMD ["chatty", "up"]
