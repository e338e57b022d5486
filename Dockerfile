# syntax=docker/dockerfile:1
# mongo-sse in a container: built in a Rust image, run as a non-root user in a slim Debian.
# `docker compose up` (see docker-compose.yml) runs `mongo-sse migrate`, then `mongo-sse serve`.
# No container engine runs on the project's machines: this file is validated, not exercised,
# by the test suite (see README, "Containers").

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
# The cache mounts keep the registry and the build between image builds.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin mongo-sse \
 && install -Dm755 target/release/mongo-sse /out/mongo-sse

FROM debian:bookworm-slim
# curl for the health check; ca-certificates for TLS connections to MongoDB Atlas and the like.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin mongo-sse
COPY --from=build /out/mongo-sse /usr/local/bin/mongo-sse
USER 10001:10001
ENV SSE_BIND=0.0.0.0:8080
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD curl -fsS http://127.0.0.1:8080/healthz >/dev/null || exit 1
ENTRYPOINT ["mongo-sse"]
CMD ["serve"]
