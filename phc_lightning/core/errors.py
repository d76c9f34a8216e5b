"""Errors caused by what the user gave us; the CLI prints them as one line and exits with code 2."""


class ConfigError(ValueError):
    """A config value that cannot work; the message names the field."""
