"""Optional dependencies: the error that names the extra to install."""

from __future__ import annotations

__all__ = ["MissingExtra"]


class MissingExtra(ImportError):
    """An optional dependency is not installed; the message names the extra to install."""
