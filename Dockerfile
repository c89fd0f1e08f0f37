# Mirrors the README: `cargo build --release`, then run `confab serve` with its defaults
# except the listen address (all interfaces inside the container).
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin confab

FROM debian:bookworm-slim
# curl for the HEALTHCHECK; libcap2-bin only to let the binary bind 443 as a non-root user
# (one-port mode), then removed.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl libcap2-bin \
    && useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin confab \
    && mkdir -p /data && chown confab:confab /data
WORKDIR /app
COPY --from=build /src/target/release/confab /usr/local/bin/confab
RUN setcap cap_net_bind_service=+ep /usr/local/bin/confab \
    && apt-get purge -y libcap2-bin && apt-get autoremove -y && rm -rf /var/lib/apt/lists/*
COPY static /app/static
# The migrations are embedded in the binary (sqlx::migrate!) and run at start; shipped here for
# operators to read.
COPY migrations /app/migrations
COPY confab.example.toml /app/confab.example.toml
ENV CONFAB_LISTEN=0.0.0.0:8080 \
    CONFAB_DATA_DIR=/data \
    CONFAB_STATIC_DIR=/app/static
VOLUME /data
USER confab
# 8080/tcp: HTTP (page, REST, signaling WebSocket); 7882-7885/udp: media; 7882-7885/tcp: ICE-TCP
# media. Media worker i listens on 7882 + i; four workers here (CONFAB_MEDIA_WORKERS): publish
# 7882-7885 (or raise both the variable and the ranges for a bigger machine).
ENV CONFAB_MEDIA_WORKERS=4
EXPOSE 8080/tcp 7882-7885/udp 7882-7885/tcp
# Liveness: 503 once the media worker stops turning (a dead one already ends the process). With
# TLS on 443, set CONFAB_HEALTH_URL=https://127.0.0.1:443/healthz. Readiness (database, media,
# settlement) is GET /readyz, for a load balancer.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD curl -fsSk "${CONFAB_HEALTH_URL:-http://127.0.0.1:8080/healthz}" >/dev/null || exit 1
# Set CONFAB_PUBLIC_IP to the address clients reach the container by. For one port (HTTPS, WSS
# and ICE-TCP media on 443, for networks that let only that out): CONFAB_TLS=self-signed (or
# files, with CONFAB_TLS_CERT/CONFAB_TLS_KEY) and CONFAB_LISTEN=0.0.0.0:443, publish 443/tcp.
# A configuration file: mount one and set CONFAB_CONFIG to its path (every key is documented in
# /app/confab.example.toml; flags and environment still win over it). Secrets come only from the
# environment or mounted files (CONFAB_*_SECRET_FILE, CONFAB_WALLET_KEY_FILE), at least 32 bytes.
# CONFAB_LOG_FORMAT=json for a log collector. Several containers as one deployment: the same
# REDIS_URL and CONFAB_JWT_SECRET, and on each its own CONFAB_NODE_ID and CONFAB_NODE_URL.
ENTRYPOINT ["confab"]
CMD ["serve"]
