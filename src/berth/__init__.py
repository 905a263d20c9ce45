"""berth: a Docker daemon of your own on a shared Linux box."""

__version__ = "0.2.0"
