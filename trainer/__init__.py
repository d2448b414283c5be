"""The trainer: ECG5000 → Keras autoencoder → threshold → evaluation → ONNX scoring artifact.

Only this package imports TensorFlow, and only inside the functions that train
or export (``trainer.model``, ``trainer.train``, ``trainer.export``). Loading
data, thresholds, metrics and ONNX scoring need numpy and onnxruntime only, so
``ecg-anomaly evaluate`` and ``ecg-anomaly score`` run on the worker install.
"""
