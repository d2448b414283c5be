# syntax=docker/dockerfile:1
# A model image: one trained artifact, copied into the worker pod by an init container.
# Rolling out a model = building this image with a new tag and setting that tag in the overlay.
#   docker build -f deploy/docker/model.Dockerfile --build-arg ARTIFACT_DIR=artifacts -t ecg-anomaly-model:<version> .
FROM busybox:1.37
ARG ARTIFACT_DIR=artifacts
COPY ${ARTIFACT_DIR}/model.onnx ${ARTIFACT_DIR}/metrics.json /model/
USER 10001:10001
ENTRYPOINT ["cp", "/model/model.onnx", "/models/model.onnx"]
