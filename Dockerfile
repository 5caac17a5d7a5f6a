# dicom-listener: DICOM C-STORE in, FHIR ImagingStudy out on RabbitMQ.
# Build: docker build -t dicom-listener .
# Run:   docker run -p 11112:11112 -p 9464:9464 -v listener-data:/data \
#          -e LISTENER_AMQP__URL=amqp://user:pass@broker:5672/%2F dicom-listener
# Or with a broker: docker compose up (see compose.yaml).

# Build stage: wheels for the package and its dependencies; build tools stay here.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY listener ./listener
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

# Final stage: only the installed wheels, run as an unprivileged user.
FROM python:3.11-slim
LABEL org.opencontainers.image.title="dicom-listener" \
      org.opencontainers.image.description="DICOM listener publishing FHIR ImagingStudy resources to RabbitMQ" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin listener \
    && mkdir -p /data && chown listener /data
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER listener
ENV LISTENER_STORAGE__DATA_DIR=/data \
    LISTENER_LOGGING__FORMAT=json \
    PYTHONUNBUFFERED=1
VOLUME ["/data"]
# DICOM associations, then Prometheus /metrics with /healthz and /readyz.
EXPOSE 11112 9464
# A real DICOM round trip: a C-ECHO to ourselves.
HEALTHCHECK --interval=30s --timeout=15s --start-period=20s --retries=3 \
    CMD ["dicom-listener", "echo", "--timeout", "10"]
ENTRYPOINT ["dicom-listener"]
CMD ["run"]
