# syntax=docker/dockerfile:1
# Multi-stage build for users with Docker or BuildKit. On machines without a daemon, `make image`
# builds the same image (static binary on an empty base, nonroot, no shell) with crane.
ARG RUST_VERSION=1.95
FROM docker.io/library/rust:${RUST_VERSION}-bookworm AS build
ARG TARGET=x86_64-unknown-linux-gnu
WORKDIR /src
COPY . .
RUN RUSTFLAGS="-C target-feature=+crt-static" \
    cargo build --release --target "${TARGET}" -p mattermost-operator --bin mattermost-operator \
 && install -D -m 0755 "target/${TARGET}/release/mattermost-operator" /out/mattermost-operator \
 && mkdir -p /out/etc /out/tmp && chmod 1777 /out/tmp \
 && printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >/out/etc/passwd \
 && printf 'root:x:0:\nnonroot:x:65532:\n' >/out/etc/group

FROM scratch
COPY --from=build /out/ /
USER 65532:65532
EXPOSE 8383
ENTRYPOINT ["/mattermost-operator"]
LABEL org.opencontainers.image.title="mattermost-operator" \
      org.opencontainers.image.description="Kubernetes operator for Mattermost, written in Rust" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/mattermost-operator-rs/mattermost-operator"
