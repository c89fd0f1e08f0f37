# Mirrors the README: `cargo build --release`, then run `confab serve` with its defaults
# except the listen address (all interfaces inside the container).
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin confab

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY --from=build /src/target/release/confab /usr/local/bin/confab
COPY static /app/static
COPY confab.example.toml /app/confab.example.toml
ENV CONFAB_LISTEN=0.0.0.0:8080 \
    CONFAB_DATA_DIR=/data \
    CONFAB_STATIC_DIR=/app/static
VOLUME /data
EXPOSE 8080/tcp 7882/udp 7882/tcp
# Set CONFAB_PUBLIC_IP to the address clients reach the container by. For one port (HTTPS, WSS
# and ICE-TCP media on 443, for networks that let only that out): CONFAB_TLS=self-signed (or
# files, with CONFAB_TLS_CERT/CONFAB_TLS_KEY) and CONFAB_LISTEN=0.0.0.0:443, publish 443/tcp.
# A configuration file: mount one and set CONFAB_CONFIG to its path (every key is documented in
# /app/confab.example.toml; flags and environment still win over it). Secrets come only from the
# environment or mounted files (CONFAB_*_SECRET_FILE, CONFAB_WALLET_KEY_FILE), at least 32 bytes.
# CONFAB_LOG_FORMAT=json for a log collector.
ENTRYPOINT ["confab"]
CMD ["serve"]
