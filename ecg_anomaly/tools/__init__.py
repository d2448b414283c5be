"""Commands beside the worker and the trainer: replay, watch, redrive, demo and the topics they use."""
