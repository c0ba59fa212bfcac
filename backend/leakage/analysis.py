"""The leakage analysis of a run: candidate lists stored in RUN/leakage/, and recall on planted leaks.

Files (plain .npy/.json; rows are test positions j = 0..n_test-1, entries training positions, -1 = empty slot):
  weight_top.npy, weight_top_value.npy        int64 / float32 (n_test, k)  largest positive datamodel weights
  weight_bottom.npy, weight_bottom_value.npy  int64 / float32 (n_test, k)  most negative datamodel weights
  feature_nn.npy, feature_similarity.npy      int64 / float32 (n_test, k)  nearest by control-feature cosine
  pixel_nn.npy, pixel_similarity.npy          int64 / float32 (n_test, k)  nearest by pixel correlation, best shift
  combined.npy, combined_score.npy            int64 / float32 (n_test, k)  rank fusion of top weights, features, pixels
  queue.npy                                   int64 (n_test,)  test positions, likeliest leak first
  queue_score.npy                             float32 (n_test,)  fused queue score of test j
  leakage.json                                settings, timings and, for a planted dataset, recall@k
leakage.json is written last, so its presence marks a finished analysis.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from backend.lazy_import import lazy_module
from backend.progress import Progress
from backend.store.artifacts import read_json, write_array, write_json
from backend.training.control import ensure_control, load_control_features
from backend.leakage.candidates import (FUSION_DEPTH, FUSION_K, NO_CANDIDATE, PIXEL_SHIFT, average_precision,
                                 feature_neighbours, float32_unit_rows, fuse_lists, fuse_scores, pixel_neighbours,
                                 ratio_test, recall_at_k, weight_extremes)
from backend.store.rows import read_row
from backend.store.errors import RunError
from backend.store.run_dir import Run
from backend.store.schema import (CONTROL_FEATURES, CONTROL_MARGINS, LEAKAGE_LISTS, LEAKAGE_QUEUE, LEAKAGE_QUEUE_SCORE,
                                  LEAKAGE_SUMMARY, WEIGHTS)

engine = lazy_module("backend.training.engine")  # (torch: only to find candidates, not to review them)

DEFAULT_K = 10
LISTS = ("weight_top", "weight_bottom", "feature_nn", "pixel_nn", "combined")
VALUES = {"weight_top": "weight_top_value", "weight_bottom": "weight_bottom_value",
          "feature_nn": "feature_similarity", "pixel_nn": "pixel_similarity", "combined": "combined_score"}
# Recall is reported per candidate list: the name in leakage.json, then the stored list.
RECALL_LISTS = (("datamodel", "weight_top"), ("baseline", "feature_nn"), ("pixels", "pixel_nn"), ("combined", "combined"))


def analyze_leakage(run: Run, progress: Progress | None = None, *,
                    k: int = DEFAULT_K, device: str = "auto") -> dict:
    """Compute and write the run's candidate lists and review queue; return a JSON-able summary.

    Needs weights.npy (`fit`). The representation baseline is control model 0's penultimate features
    (backend/training/control.py); a run without them gets one control model trained first. When the run's
    dataset is an npz holding planted_test/planted_train (`plant-leaks`), the summary reports
    recall@k of the planted pairs for each list and the average precision of the queue.
    progress : counts the steps done ("step": control, weights, features, pixels, lists; backend.progress).
    """
    if not run.has(WEIGHTS):
        raise RunError(f"run {run.dir} has no datamodels ({WEIGHTS.name}): fit them with `{WEIGHTS.command(run.dir)}`")
    if run.n_train < 2:
        raise RunError(f"run {run.dir} has {run.n_train} training image(s): leak candidates need at least 2")
    started = time.perf_counter()
    need_control = not (run.has(CONTROL_FEATURES) and run.has(CONTROL_MARGINS))
    steps = 5 if need_control else 4

    def report(done: int) -> None:
        if progress:
            progress(done, steps, "step")

    report(0)
    if need_control:
        # One model is enough: only its features are used here.
        ensure_control(run, 1, device=device)
    base = steps - 4
    report(base)
    weights = run.array(WEIGHTS)[run.n_train:]
    depth = max(k, FUSION_DEPTH)
    top, top_value, bottom, bottom_value = weight_extremes(weights, depth)
    report(base + 1)
    features = load_control_features(run)
    nn, similarity = feature_neighbours(features[run.n_train:], features[:run.n_train], depth)
    report(base + 2)
    pixels, pixel_similarity = pixel_neighbours(run.images[run.n_train:], run.images[:run.n_train], depth,
                                                device=engine.resolve_device(device))
    report(base + 3)
    combined, combined_score = fuse_lists([top, nn, pixels], k)
    # Queue statistics per test image: its largest weight, and how far its nearest neighbour stands out.
    best_weight, ratio, pixel_ratio = top_value[:, 0], ratio_test(similarity), ratio_test(pixel_similarity)
    queue, queue_score = fuse_scores([best_weight, -ratio, -pixel_ratio])
    arrays = {
        "weight_top": top[:, :k], "weight_top_value": top_value[:, :k],
        "weight_bottom": bottom[:, :k], "weight_bottom_value": bottom_value[:, :k],
        "feature_nn": nn[:, :k], "feature_similarity": similarity[:, :k],
        "pixel_nn": pixels[:, :k], "pixel_similarity": pixel_similarity[:, :k],
        "combined": combined, "combined_score": combined_score,
        "queue": queue, "queue_score": queue_score,
    }
    files = dict(LEAKAGE_LISTS, queue=LEAKAGE_QUEUE, queue_score=LEAKAGE_QUEUE_SCORE)
    for name, array in arrays.items():
        write_array(run.dir, files[name], array)
    summary = {
        "run": str(run.dir), "n_test": run.n_test, "n_train": run.n_train, "k": k,
        "fusion": {"method": "reciprocal rank fusion", "k": FUSION_K, "depth": depth},
        "pixels": {"similarity": "pixel correlation", "max_shift": PIXEL_SHIFT},
        "queue": "fusion over test images of the largest datamodel weight and Lowe's ratio test in features and in pixels",
        "features_dim": int(features.shape[1]), "trained_control": need_control,
        "seconds": round(time.perf_counter() - started, 2),
    }
    truth = planted_ground_truth(run)
    if isinstance(truth, str):
        summary["planted"] = {"note": truth}
    elif truth is not None:
        summary["planted"] = planted_scores(arrays, *truth, best_weight=best_weight, ratio=ratio,
                                            pixel_ratio=pixel_ratio, k=k)
    write_json(run.dir, LEAKAGE_SUMMARY, summary)
    report(steps)
    return summary


def planted_scores(arrays: dict[str, np.ndarray], planted_test: np.ndarray, planted_train: np.ndarray, *,
                   best_weight: np.ndarray, ratio: np.ndarray, pixel_ratio: np.ndarray, k: int) -> dict:
    """Recall@k of the planted pairs for each list, and the average precision of each possible queue."""
    recall = {name: round(recall_at_k(arrays[lst], planted_test, planted_train, k), 4) for name, lst in RECALL_LISTS}
    orders = {"datamodel": np.argsort(-best_weight, kind="stable"), "baseline": np.argsort(ratio, kind="stable"),
              "pixels": np.argsort(pixel_ratio, kind="stable"), "combined": arrays["queue"]}
    return {"n": int(len(planted_test)), f"recall_at_{k}": recall,
            "queue_average_precision": {name: round(average_precision(order, planted_test), 4)
                                        for name, order in orders.items()}}


def planted_ground_truth(run: Run) -> tuple[np.ndarray, np.ndarray] | str | None:
    """(planted_test, planted_train) from the run's npz dataset, None if it has none, or a note saying why not.

    The file is checked against the run's dataset fingerprint, so a rewritten npz never scores a run.
    """
    from backend.datasets.planted import npz_ground_truth

    dataset = run.manifest["dataset"]
    return npz_ground_truth(dataset["spec"], dataset.get("fingerprint"), ("planted_test", "planted_train"), "recall")


@dataclass(frozen=True)
class LeakageCandidates:
    """The stored lists of a run (memory-mapped); see the module docstring for shapes."""

    weight_top: np.ndarray
    weight_top_value: np.ndarray
    weight_bottom: np.ndarray
    weight_bottom_value: np.ndarray
    feature_nn: np.ndarray
    feature_similarity: np.ndarray
    pixel_nn: np.ndarray
    pixel_similarity: np.ndarray
    combined: np.ndarray
    combined_score: np.ndarray
    queue: np.ndarray
    queue_score: np.ndarray
    summary: dict


def load_candidates(run: Run) -> LeakageCandidates:
    """The run's leakage artifacts; RunError naming the command when `analyze` has not written them."""
    path = LEAKAGE_SUMMARY.path(run.dir)
    if not path.is_file():
        raise RunError(f"run {run.name} has no leak candidates yet ({path} is missing): "
                       f"compute them with `{LEAKAGE_SUMMARY.command(run.dir)}`")
    summary = read_json(run.dir, LEAKAGE_SUMMARY)  # the schema's keys: an analysis from before the pixel list fails here
    arrays = {name: run.array(LEAKAGE_LISTS[name], k=summary["k"]) for name in (*LISTS, *VALUES.values())}
    return LeakageCandidates(**arrays, queue=run.array(LEAKAGE_QUEUE), queue_score=run.array(LEAKAGE_QUEUE_SCORE),
                             summary=summary)


@dataclass(frozen=True)
class Candidate:
    """One training image shown beside a test image for review."""

    train: int
    source: str  # "top weight", "bottom weight", "features" or "pixels"
    weight: float
    similarity: float  # cosine of control-model features
    pixel: float  # pixel correlation at the best shift (the pixel list's score)


def review_candidates(run: Run, candidates: LeakageCandidates, test: int, n: int = 5) -> list[Candidate]:
    """What a reviewer sees for test image `test`: the paper's top n and bottom n training images by
    datamodel weight, then up to n nearest by features and up to n nearest in pixels not already shown.

    Each comes with its weight in test's datamodel, its feature cosine and its pixel correlation with the test image.
    """
    chosen: list[tuple[int, str]] = []
    for source, row in (("top weight", candidates.weight_top[test, :n]), ("bottom weight", candidates.weight_bottom[test, :n]),
                        ("features", candidates.feature_nn[test]), ("pixels", candidates.pixel_nn[test])):
        shown = {t for t, _ in chosen}
        fresh = [int(t) for t in row if t != NO_CANDIDATE and int(t) not in shown]
        chosen.extend((t, source) for t in fresh[:n])
    trains = np.array([t for t, _ in chosen], dtype=np.int64)
    if not len(trains):
        return []
    column = run.n_train + test
    # File reads, not gathers from the memmaps: each touched page would map its neighbours too and stay in
    # the dashboard's resident set (+750 MiB over 500 reviewed images at CIFAR scale, bench_dashboard).
    weights = read_row(run.array(WEIGHTS), column)[trains].astype(np.float64)
    features = load_control_features(run)
    vectors = float32_unit_rows(np.stack([read_row(features, int(j)) for j in (column, *trains)]))
    similarity = vectors[1:] @ vectors[0]
    images = run.images
    found, correlation = pixel_neighbours(read_row(images, column)[None], np.stack([read_row(images, int(t)) for t in trains]),
                                          len(trains))
    pixel = np.empty(len(trains), dtype=np.float64)
    pixel[found[0]] = correlation[0]
    return [Candidate(t, source, float(w), float(s), float(px))
            for (t, source), w, s, px in zip(chosen, weights, similarity, pixel)]
