"""idlink: customer identity service for contact centres."""

__version__ = "0.1.0"

__all__ = ["__version__"]
