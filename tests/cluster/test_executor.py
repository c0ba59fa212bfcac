"""LocalExecutor, the executor a stage runs on by default: its state built once (never for no items), and each
item pulled only once the previous result was taken (the fit hands a block the λ ratios written before it)."""
from __future__ import annotations

from backend.cluster.executor import LocalExecutor


def test_items_are_pulled_one_at_a_time_after_the_previous_result_is_taken():
    events = []

    def items():
        for i in range(3):
            events.append(f"pull {i}")
            yield (i,)

    def setup(shared):
        events.append(f"setup {shared}")
        return 10

    for i, result in LocalExecutor().map(lambda state, x: state + x, items(), setup=setup, shared="data"):
        events.append(f"took {i}: {result}")
    assert events == ["pull 0", "setup data", "took 0: 10", "pull 1", "took 1: 11", "pull 2", "took 2: 12"]


def test_no_items_build_no_state():
    built = []
    assert list(LocalExecutor().map(lambda state: state, [], setup=built.append, shared=1)) == []
    assert built == []
