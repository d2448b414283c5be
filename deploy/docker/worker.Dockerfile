# syntax=docker/dockerfile:1
# The worker image: onnxruntime + confluent-kafka, no TensorFlow, non-root, read-only friendly.
# Build from the repository root:  docker build -f deploy/docker/worker.Dockerfile -t ecg-anomaly-worker .
FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
COPY deploy/docker/worker-requirements.txt /tmp/requirements.txt
RUN /opt/venv/bin/pip install --requirement /tmp/requirements.txt
WORKDIR /src
COPY pyproject.toml README.md ./
COPY ecg_anomaly ecg_anomaly
COPY schemas schemas
COPY worker worker
# The trainer's modules are light (TensorFlow is imported only inside `train`) and the CLI lists them.
COPY trainer trainer
RUN /opt/venv/bin/pip install --no-deps . && /opt/venv/bin/python -m compileall -q /opt/venv

FROM python:3.11-slim-bookworm
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["ecg-anomaly", "worker"]
