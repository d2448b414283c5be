"""The Kafka worker: decode, score with onnxruntime, publish, commit. Never imports TensorFlow."""
