"""rankmixer: train, search, distill and serve industrial-scale ranking models."""

__version__ = "0.1.0"
