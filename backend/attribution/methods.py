"""Every attribution method, imported so each registers itself under its CLI name."""
from backend.attribution import datamodels  # noqa: F401  (registers "datamodels")
from backend.attribution import difference_of_means  # noqa: F401  (registers "diff-of-means", "empirical-influence")
from backend.attribution import representation  # noqa: F401  (registers "representation")
from backend.attribution import ssl_esvm  # noqa: F401  (registers "ssl-esvm")
from backend.attribution.base import METHODS, make

__all__ = ["METHODS", "make"]
