"""Run any method in resumable blocks of test targets and store its scores, self-scores and meta.json."""
from __future__ import annotations

import time

import numpy as np

from backend.attribution import base
from backend.progress import Progress, part
from backend.store.blocks import BlockedOutput
from backend.store.artifacts import write_array, write_json
from backend.store.atomic import transaction
from backend.store.run_dir import Run
from backend.store.schema import ATTRIBUTION_META, ATTRIBUTION_SCORES, ATTRIBUTION_SELF_SCORES
from backend.store.provenance import code_version

DEFAULT_BLOCK_ROWS = 256


def attribute(run: Run, method: base.Method, block_rows: int = DEFAULT_BLOCK_ROWS,
              progress: Progress | None = None) -> dict:
    """Score every test target under `method` and write attribution/<name>/{scores,self_scores}.npy and meta.json,
    in one transaction: the self-scores always come from the same prepared models and settings as the scores.

    Blocks already scored by an interrupted call with the same configuration are kept. progress counts
    the method's own preparation as one step, then one step per block, then the self-scores as one step.
    """
    started = time.time()
    total = 2 + -(-run.n_test // block_rows)  # preparation, the blocks, the self-scores
    if progress:
        progress(0, total, "block")
    # The method reads (and the schema checks) its inputs first: a broken one stops it before any staging exists.
    method.prepare(part(progress, 0, 1, total, "block"))  # one bar, in blocks, whatever units the method counts
    out = BlockedOutput(run.dir, f"attribution-{method.name}", {"method": method.name, "config": method.config},
                        {"scores": ("float32", (run.n_test, run.n_train))}, block_rows)
    todo = out.missing()
    for i, block in enumerate(todo):
        out.write(block, scores=method.score(out.rows(block)))
        if progress:
            progress(1 + out.n_blocks - len(todo) + i + 1, total, "block")
    own = np.asarray(method.self_scores(), dtype=np.float32)
    if progress:
        progress(total, total, "block")
    meta = {"method": method.name, "config": method.config, "models": method.models,
            "seconds": round(time.time() - started, 3), "resumed_blocks": out.n_blocks - len(todo),
            "bytes": int(out.view("scores").nbytes), "code_version": code_version()}
    with transaction(run.dir, "attribute"):
        out.commit({"scores": (ATTRIBUTION_SCORES, {"method": method.name})})
        write_array(run.dir, ATTRIBUTION_SELF_SCORES, own, method=method.name)
        write_json(run.dir, ATTRIBUTION_META, meta, method=method.name)
    out.discard()
    return meta
