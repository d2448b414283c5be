"""The one base class of every error this project raises on purpose, and the usage error."""


class EcgAnomalyError(Exception):
    """Base of all project errors; the CLI prints these as one line and exits non-zero (``exit_code``)."""

    exit_code = 1


class ConfigError(EcgAnomalyError):
    """An invalid option, flag or environment variable (a usage error: exit status 2)."""

    exit_code = 2
