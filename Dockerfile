# Ember's container image: `ember` (server, sql, serve, tpch/tpcds) and `ember-executor`.
#
#   docker build -t ember:0.1.0 .
#
# Stage 1 builds the release binaries; stage 2 is a slim runtime with a non-root user.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin ember --bin ember-executor \
 && install -D -m 0755 target/release/ember /out/ember \
 && install -D -m 0755 target/release/ember-executor /out/ember-executor

FROM debian:bookworm-slim
# libvulkan1 and Mesa's drivers let mllib find a GPU the node exposes (else it runs on
# the CPU); tini reaps children and forwards SIGTERM for a clean shutdown.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates tini libvulkan1 mesa-vulkan-drivers \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/ember --create-home ember
COPY --from=build /out/ember /out/ember-executor /usr/local/bin/
USER 10001:10001
WORKDIR /var/lib/ember
# Spill files and temporary data go here (mount an emptyDir or a local volume).
ENV TMPDIR=/var/lib/ember/tmp
RUN mkdir -p /var/lib/ember/tmp
EXPOSE 15002 7077 7078 8081
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["ember", "--help"]
