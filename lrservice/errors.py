"""The one error type for bad input: a leaf so that every layer can raise it without importing config."""

from __future__ import annotations


class ConfigError(ValueError):
    """A config value is invalid; the message names the field and what is allowed."""
