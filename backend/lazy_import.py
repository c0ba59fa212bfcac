"""Modules imported on first use: the pages that only read a run never pay for torch.

torch takes 2–12 s to import (more on a loaded machine), and a page pays it on its first visit after the
server starts. The structure and retraining modules need torch to compute, not to read what they stored,
so they hold it as a lazy module: the name is bound now, the import runs on the first attribute access.
(Not importlib.util.LazyLoader: its placeholder sits in sys.modules, and torch's own import walks
sys.modules asking every module for __file__, which set off our half-imported modules mid-import.)
"""
from __future__ import annotations

import importlib
from types import ModuleType


class LazyModule(ModuleType):
    """Stands for module `name`; the first attribute looked up imports it, and every lookup is forwarded."""

    def __init__(self, name: str):
        super().__init__(name)
        self.__dict__["_module"] = None

    def __getattr__(self, attr: str):
        module = self.__dict__["_module"]
        if module is None:
            module = self.__dict__["_module"] = importlib.import_module(self.__name__)
        return getattr(module, attr)


def lazy_module(name: str) -> ModuleType:
    """Module `name`, imported when one of its attributes is first used."""
    return LazyModule(name)
