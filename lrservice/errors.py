"""The error a user sees as one line: a config value (or a plugin it names) is not allowed."""


class ConfigError(ValueError):
    """A config value is invalid; the message names the field and what is allowed."""
