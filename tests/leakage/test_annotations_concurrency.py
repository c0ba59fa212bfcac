"""Eight annotator processes voting at once on one database (a SQLite file, a PostgreSQL server) lose no vote
and duplicate none; on SQLite, reads never wait for the write lock."""
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from backend.leakage import annotations
from backend.leakage.annotations import AnnotationStore, AnnotationStoreError

ROOT = Path(__file__).resolve().parents[2]
N_PROCESSES, N_VOTES, N_DISTINCT = 8, 300, 240

# Vote i of a process: pairs 0..239 once, then votes 240..299 re-vote pairs 0, 4, 8, ... with the opposite answer.
WORKER = f"""
import sys, time
from pathlib import Path
from backend.leakage.annotations import AnnotationStore
url, name, go = sys.argv[1], sys.argv[2], Path(sys.argv[3])
store = AnnotationStore(url)
while not go.exists():
    time.sleep(0.005)
store.annotator_id("everyone")
written = 0
for i in range({N_VOTES}):
    key = i if i < {N_DISTINCT} else (i - {N_DISTINCT}) * 4
    test, train = divmod(key, 8)
    written += store.submit("run", test, name, {{train: (key % 3 == 0) != (i >= {N_DISTINCT})}})
print(written)
"""


def expected_votes() -> dict[tuple[int, int], bool]:
    final = {}
    for i in range(N_VOTES):
        key = i if i < N_DISTINCT else (i - N_DISTINCT) * 4
        final[divmod(key, 8)] = (key % 3 == 0) != (i >= N_DISTINCT)
    return final


def test_concurrent_annotators_lose_and_duplicate_nothing(database_url, tmp_path):
    url = database_url
    AnnotationStore(url).dispose()
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, url, f"annotator-{k}", str(go)], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for k in range(N_PROCESSES)]
    time.sleep(1.0)  # let every process import and connect, so the votes really overlap
    go.touch()
    results = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, results):
        assert p.returncode == 0, err[-2000:]
        assert int(out) == N_VOTES

    store = AnnotationStore(url)
    got = store.votes("run")
    assert len(got) == N_PROCESSES * N_DISTINCT
    want = expected_votes()
    for k in range(N_PROCESSES):
        mine = {(v.test, v.train): v.is_leak for v in got if v.annotator == f"annotator-{k}"}
        assert mine == want
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("select count(*) from annotators where name = 'everyone'").scalar() == 1
        assert conn.exec_driver_sql("select count(*) from (select 1 from votes group by run, test, train, "
                                    "annotator_id having count(*) > 1) as repeated").scalar() == 0
    store.dispose()


def test_reads_go_on_while_another_connection_holds_the_write_lock(tmp_path, monkeypatch):
    monkeypatch.setattr(annotations, "BUSY_TIMEOUT_S", 1)  # a blocked statement fails after 1 s, not 30
    path = tmp_path / "locked.db"
    path.touch()
    store = AnnotationStore(f"sqlite:///{path}")
    store.submit("run", 0, "ann", {1: True})
    store.skip("run", 2, "ann")
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("UPDATE votes SET is_leak = 0")  # uncommitted: readers keep seeing the last commit
    try:
        started = time.perf_counter()
        assert [(v.annotator, v.test, v.train, v.is_leak) for v in store.votes("run")] == [("ann", 0, 1, True)]
        assert store.reviewed("run", "ann") == {0} and store.skipped("run", "ann") == {2}
        assert store.skip_counts("run") == {"ann": 1}
        assert time.perf_counter() - started < 0.5  # no wait for the lock at all
        with pytest.raises(AnnotationStoreError, match="locked"):
            store.submit("run", 0, "ann", {1: False})  # writers do queue for the lock
    finally:
        writer.execute("ROLLBACK")
        writer.close()
        store.dispose()
