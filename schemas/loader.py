"""Opening a model artifact: an onnxruntime session over the ONNX bytes, metadata and graph validated.

The one loader of the artifact contract (:mod:`ecg_anomaly.schemas.artifact`): the worker and the
trainer's evaluate, score and export all go through it, so a file either side accepts the other
accepts too.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort

from ecg_anomaly.schemas.artifact import (
    INPUT_NAME,
    SAMPLE_ERROR_OUTPUT,
    SCORE_OUTPUT,
    ArtifactError,
    ArtifactMetadata,
    decode_metadata,
)


def open_artifact(data: bytes, name: str, threads: int = 1) -> tuple[ort.InferenceSession, ArtifactMetadata]:
    """An onnxruntime session over ONNX bytes, its metadata and graph validated.

    ``name`` (e.g. "model file /path/model.onnx") starts every error message.
    """
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(data, sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own untyped errors for a bad file
        raise ArtifactError(f"{name} is not a loadable ONNX model: {exc}") from exc
    metadata = decode_metadata(session.get_modelmeta().custom_metadata_map)
    _check_graph(session, metadata, name)
    return session, metadata


def _check_graph(session: ort.InferenceSession, metadata: ArtifactMetadata, name: str) -> None:
    inputs = {i.name: i for i in session.get_inputs()}
    outputs = {o.name for o in session.get_outputs()}
    if INPUT_NAME not in inputs or not {SCORE_OUTPUT, SAMPLE_ERROR_OUTPUT} <= outputs:
        raise ArtifactError(
            f"{name}: expected input {INPUT_NAME!r} and outputs {SCORE_OUTPUT!r}, "
            f"{SAMPLE_ERROR_OUTPUT!r}; found inputs {sorted(inputs)} and outputs {sorted(outputs)}"
        )
    shape = inputs[INPUT_NAME].shape
    if len(shape) != 2 or shape[1] != metadata.input_length:
        raise ArtifactError(
            f"{name}: input {INPUT_NAME!r} has shape {shape}, "
            f"expected [N, {metadata.input_length}] (metadata input_length)"
        )
    try:  # one real inference: catches graphs that load but cannot run
        probe = np.zeros((1, metadata.input_length), dtype=np.float32)
        score, sample_error = session.run([SCORE_OUTPUT, SAMPLE_ERROR_OUTPUT], {INPUT_NAME: probe})
    except Exception as exc:
        raise ArtifactError(f"{name}: a test inference failed: {exc}") from exc
    if np.shape(score) != (1,) or np.shape(sample_error) != (1, metadata.input_length):
        raise ArtifactError(
            f"{name}: outputs have shapes {np.shape(score)} and {np.shape(sample_error)}, "
            f"expected (1,) and (1, {metadata.input_length}) for one beat"
        )
