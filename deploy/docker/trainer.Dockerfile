# syntax=docker/dockerfile:1
# The trainer image: TensorFlow (CPU), tf2onnx, the ECG5000 data package. Writes the artifact to --out.
# Build from the repository root:  docker build -f deploy/docker/trainer.Dockerfile -t ecg-anomaly-trainer .
FROM python:3.11-slim-bookworm
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1 \
    MPLCONFIGDIR=/tmp/matplotlib TF_CPP_MIN_LOG_LEVEL=2
# Pinned dependencies first (make trainer-requirements): the same versions in every build, and a
# change to the sources below does not reinstall TensorFlow.
COPY deploy/docker/trainer-requirements.txt /tmp/requirements.txt
RUN pip install --requirement /tmp/requirements.txt
WORKDIR /src
COPY pyproject.toml README.md ./
COPY ecg_anomaly ecg_anomaly
COPY schemas schemas
COPY worker worker
COPY trainer trainer
RUN pip install --no-deps .
USER 10001:10001
ENTRYPOINT ["ecg-anomaly", "train"]
