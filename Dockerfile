# syntax=docker/dockerfile:1
# sekoia-relay container image.
#
#   docker build -t sekoia-relay .
#   docker run -d --name sekoia-relay -p 8000:8000 \
#     -v "$PWD/config.toml:/etc/sekoia-relay/config.toml:ro" -v sekoia-relay-data:/data \
#     -e SEKOIA_API_KEY sekoia-relay
#
# The store (SQLite) lives in the /data volume: keep it across upgrades, it holds the queue.

# ---- build ------------------------------------------------------------------------------------
FROM rust:1-slim-bookworm AS build
WORKDIR /src
# Only what the release binary is built from (see .dockerignore): templates are embedded.
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY templates ./templates
# Cache mounts keep the crate registry and compiled dependencies between builds; the binary
# is copied out because the target directory is not part of the image layer.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
    && cp target/release/sekoia-relay /usr/local/bin/sekoia-relay

# ---- runtime ----------------------------------------------------------------------------------
FROM debian:bookworm-slim
# The binary verifies TLS with the Mozilla roots compiled into it (webpki-roots); the system
# CA bundle is there for anything else in the image and for operators debugging from a shell.
# Unpinned on purpose: every rebuild should pick up the base image's security updates.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --home-dir /data --shell /usr/sbin/nologin relay \
    && mkdir -p /data /etc/sekoia-relay \
    && chown relay:relay /data

COPY --from=build /usr/local/bin/sekoia-relay /usr/local/bin/sekoia-relay
# The shipped config (demo hook -> console) so the image runs as is; mount your own over it.
COPY config.toml /etc/sekoia-relay/config.toml

ENV SEKOIA_RELAY_CONFIG=/etc/sekoia-relay/config.toml \
    SEKOIA_RELAY__SERVER__LISTEN=0.0.0.0:8000 \
    SEKOIA_RELAY__STORE__PATH=/data/relay.db

# Numeric, so Kubernetes' runAsNonRoot can check it; 10001 owns /data.
USER 10001:10001
VOLUME ["/data"]
EXPOSE 8000
# GET /healthz on the listen address (0.0.0.0 is reached via 127.0.0.1); no curl needed.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["sekoia-relay", "healthcheck"]
# The relay is PID 1 and handles SIGTERM (drain, exit 0) and SIGHUP (reload) itself.
ENTRYPOINT ["sekoia-relay"]
CMD ["serve"]
