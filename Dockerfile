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
ENV CONFAB_LISTEN=0.0.0.0:8080 \
    CONFAB_DATA_DIR=/data \
    CONFAB_STATIC_DIR=/app/static
VOLUME /data
EXPOSE 8080/tcp 7882/udp 7882/tcp
# Set CONFAB_PUBLIC_IP to the address clients reach the container by. For one port (HTTPS, WSS
# and ICE-TCP media on 443, for networks that let only that out): CONFAB_TLS=self-signed (or
# files, with CONFAB_TLS_CERT/CONFAB_TLS_KEY) and CONFAB_LISTEN=0.0.0.0:443, publish 443/tcp.
ENTRYPOINT ["confab"]
CMD ["serve"]
