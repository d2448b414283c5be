"""Contracts shared by the trainer and the worker: the model artifact and the messages."""
