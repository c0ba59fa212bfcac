"""Every attribution method, imported so each registers itself under its CLI name."""
from backend.attribution import datamodels  # noqa: F401  (registers "datamodels")
from backend.attribution.base import METHODS, make

__all__ = ["METHODS", "make"]
