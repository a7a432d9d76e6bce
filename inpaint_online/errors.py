"""Errors that carry a message for the user (printed without a traceback by the CLIs)."""


class ConfigError(ValueError):
    """A configuration value or a file it names is wrong; the message says which and why."""
