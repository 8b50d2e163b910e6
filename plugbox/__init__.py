"""plugbox: a sandboxed plugin host for a messaging gateway."""

__version__ = "0.1.0"

__all__ = ["__version__"]
