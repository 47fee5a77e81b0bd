# syntax=docker/dockerfile:1

# The crm-auth image: the release binary on Debian slim, run as an unprivileged user, data under
# /var/lib/crm-auth. Build with `docker build -t crm-auth .`; docker-compose.yml runs it beside PostgreSQL.

FROM rust:1.95-bookworm AS builder
WORKDIR /src
COPY . .
# The caches keep the registry and the build between image builds; the binary is copied out of the cached
# target folder because cache mounts are not part of the image.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p crm-auth-server \
    && cp target/release/crm-auth /usr/local/bin/crm-auth

FROM debian:bookworm-slim
# libssl3: libpq (bundled into the binary) links OpenSSL for TLS connections to PostgreSQL.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates libssl3 \
    && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 crm-auth \
    && useradd --system --uid 10001 --gid crm-auth --home-dir /var/lib/crm-auth --shell /usr/sbin/nologin crm-auth \
    && install -d -o crm-auth -g crm-auth -m 0700 /var/lib/crm-auth
COPY --from=builder /usr/local/bin/crm-auth /usr/local/bin/crm-auth

USER 10001:10001
WORKDIR /var/lib/crm-auth
# The data folder holds the generated signing key (when token.keys is not configured) and the SQLite database
# (unless CRM_AUTH__DATABASE__URL points at PostgreSQL).
ENV CRM_AUTH__DATA_DIR=/var/lib/crm-auth \
    CRM_AUTH__HTTP__BIND=0.0.0.0:8080 \
    CRM_AUTH__DATABASE__URL=sqlite:///var/lib/crm-auth/crm-auth.db
VOLUME ["/var/lib/crm-auth"]
EXPOSE 8080

# The image has no curl: bash's /dev/tcp asks /health/ready on the configured port (the management
# listener's when CRM_AUTH__HTTP__MANAGEMENT_BIND is set, since the main one then answers it NOT_FOUND).
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
    CMD ["bash", "-c", "addr=${CRM_AUTH__HTTP__MANAGEMENT_BIND:-$CRM_AUTH__HTTP__BIND} && exec 3<>/dev/tcp/127.0.0.1/${addr##*:} && printf 'GET /health/ready HTTP/1.0\\r\\n\\r\\n' >&3 && read -r _ code _ <&3 && [ \"$code\" = 200 ]"]

ENTRYPOINT ["crm-auth"]
CMD ["serve"]
