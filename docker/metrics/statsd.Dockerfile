# The statsd receiver of the metrics stack (docker-compose profile `metrics`): Debian's collectd with its
# statsd and write_prometheus plugins. BASE_IMAGE is the Debian base (tests pass a local one).
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}
ARG ARGUS_GIT_COMMIT=""
LABEL org.opencontainers.image.title="argus-statsd" \
      org.opencontainers.image.revision="${ARGUS_GIT_COMMIT}"
RUN apt-get update \
    && apt-get install -y --no-install-recommends collectd-core=5.12.0-14 libprotobuf-c1=1.4.1-1+b1 libmicrohttpd12=0.9.75-6 \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /var/lib/collectd /run/collectd \
    && chown 65534:65534 /var/lib/collectd /run/collectd
COPY docker/metrics/collectd.conf /etc/collectd/argus.conf
USER 65534:65534
EXPOSE 8125/udp 9103
ENTRYPOINT ["/usr/sbin/collectd", "-f", "-C", "/etc/collectd/argus.conf"]
