"""The one base class of every error this project raises on purpose."""


class EcgAnomalyError(Exception):
    """Base of all project errors; the CLI turns these into a message and a non-zero exit."""
