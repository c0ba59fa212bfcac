"""Every attribution method, imported so each registers itself under its CLI name."""
from backend.attribution import datamodels  # noqa: F401  (registers "datamodels")
from backend.attribution import influence  # noqa: F401  (registers "influence")
from backend.attribution import tracin  # noqa: F401  (registers "tracin")
from backend.attribution import trak  # noqa: F401  (registers "trak")
from backend.attribution.base import METHODS, make

__all__ = ["METHODS", "make"]
