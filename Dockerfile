# dicom-listener: DICOM C-STORE in, FHIR ImagingStudy out on RabbitMQ.
# Build: docker build -t dicom-listener .
# Run:   docker run -p 11112:11112 -v listener-data:/data \
#          -e LISTENER_AMQP__URL=amqp://user:pass@broker:5672/%2F dicom-listener

FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY listener ./listener
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

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
EXPOSE 11112
ENTRYPOINT ["dicom-listener"]
CMD ["run"]
