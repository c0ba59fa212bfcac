"""A small random datamodel problem (fixed-size random subsets, margins with a sparse linear signal)."""
from __future__ import annotations

import pytest

from tests.oracles import random_problem


@pytest.fixture(scope="module")
def problem():
    return random_problem()
