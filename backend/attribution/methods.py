"""Every attribution method by CLI name and the module that holds it, imported when the method is made:
the gradient methods import torch, which the CLI's parser and the pages do not need to load."""
from __future__ import annotations

import importlib

from backend.attribution import base

MODULES = {"datamodels": "datamodels", "diff-of-means": "difference_of_means",
           "empirical-influence": "difference_of_means", "influence": "influence", "representation": "representation",
           "ssl-esvm": "ssl_esvm", "tracin": "tracin", "trak": "trak"}
METHODS = tuple(sorted(MODULES))


def method_class(name: str):
    """The class of a listed method (its module imported, so it is registered), or None for another name."""
    if name not in MODULES:
        return None
    importlib.import_module(f"backend.attribution.{MODULES[name]}")
    return base.METHODS[name]


def make(name: str, run, **options) -> base.Method:
    method_class(name)
    return base.make(name, run, **options)
