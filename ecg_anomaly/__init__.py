"""ECG heartbeat anomaly detection: the command-line entry point."""

__version__ = "0.2.0"
