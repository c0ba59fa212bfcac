"""`representation`: cosine similarity of a control model's penultimate features, signed by label agreement.

Seed 002 ("A simple and efficient baseline for data attribution on images", its LDS adaptation of
similarity baselines) turns a similarity into attribution scores: a training image of the target's
label is taken to raise the target's margin (+ its cosine similarity), one of another label to lower
it (− its cosine similarity), and only the top 5 % of training images per target by the size of that
score are kept (the rest are 0), since a model's prediction rests on a few similar images. The
features are those of control model 0 (backend.training.control: the run's architecture trained on
the full training set), the representation baseline that [structure] and [leakage] use too.

Self-score: kNN label disagreement over a training image's k = 10 nearest other training images (cosine of
the same features; Bahri et al. 2020, "Deep k-NN for noisy labels"), each disagreeing neighbour weighted by
its cosine similarity as in distance-weighted kNN (Dudani 1976): (1/k) Σ_j max(s_ij, 0) [y_j ≠ y_i]. The
plain share of disagreeing neighbours takes k + 1 values, so thousands of images tie at 1.0 and "the images
flagged first" were the lowest positions among them; the weights rank an image whose disagreeing neighbours
are closer first, and the score equals the share when every similarity is 1. A one-model feature method
attributes by similarity, so its own evidence against a label is that similar images carry another one; it
needs no gradients or retraining, and it is what a feature-space tool (cleanlab's kNN issues, FiftyOne's
mistakenness by neighbours) reports. `ssl-esvm` uses it too.
"""
from __future__ import annotations

import math

import numpy as np

from backend.attribution.base import register
from backend.store.run_dir import Run
from backend.store.schema import CONTROL_FEATURES

TOP_FRACTION = 0.05
NEIGHBOURS = 10  # kNN label disagreement's k (Bahri et al. 2020 choose k by validation; 10 suits 130 images a class)


def keep_top(scores: np.ndarray, fraction: float = TOP_FRACTION) -> np.ndarray:
    """scores (T, n_train) with all but each row's ceil(fraction · n_train) largest |scores| set to 0 (in place)."""
    n_train = scores.shape[1]
    k = min(n_train, max(1, math.ceil(fraction * n_train)))
    if k < n_train:
        drop = np.argpartition(-np.abs(scores), k, axis=1)[:, k:]
        np.put_along_axis(scores, drop, 0.0, axis=1)
    return scores


def representation_scores(test_features: np.ndarray, train_features: np.ndarray, test_labels: np.ndarray,
                          train_labels: np.ndarray, fraction: float = TOP_FRACTION) -> np.ndarray:
    """float32 (T, n_train): cos(f_test, f_train) · (+1 same label, −1 otherwise), top `fraction` kept per row.

    test_features : (T, D); train_features : (n_train, D); labels int of shapes (T,) and (n_train,).
    """
    from backend.leakage.candidates import float32_unit_rows  # faiss and torch: imported on use, not on registering

    cos = float32_unit_rows(test_features) @ float32_unit_rows(train_features).T
    same = np.asarray(test_labels)[:, None] == np.asarray(train_labels)[None, :]
    return keep_top(np.where(same, cos, -cos).astype(np.float32), fraction)


def knn_label_disagreement(features: np.ndarray, labels: np.ndarray, k: int = NEIGHBOURS,
                           block: int | None = None) -> np.ndarray:
    """float32 (n,): (1/k) Σ_j max(s_ij, 0) [y_j ≠ y_i] over each row's k nearest other rows j by cosine s_ij.

    features : (n, D); labels : int (n,). The neighbours are the exact blocked search of similar targets
    (backend.structure.similar_targets.nearest_targets), `block` rows at a time, the row itself excluded.
    In [0, 1]; the share of disagreeing neighbours when every s_ij = 1, and the similarities break its ties.
    """
    from backend.structure.embeddings import EmbeddingRows, HeldEmbeddings
    from backend.structure.similar_targets import nearest_targets

    labels = np.asarray(labels)
    neighbors, similarity = nearest_targets(HeldEmbeddings(EmbeddingRows(np.asarray(features, dtype=np.float32))),
                                            k, block_rows=block)
    weights = np.maximum(similarity.astype(np.float64), 0.0)  # an opposite image is no evidence against a label
    return (weights * (labels[neighbors] != labels[:, None])).mean(axis=1).astype(np.float32)


@register("representation")
class Representation:
    def __init__(self, run: Run, device: str = "auto", top_fraction: float = TOP_FRACTION):
        self.run, self.device = run, device
        self.config = {"features": "penultimate layer of control model 0", "sign": "label agreement",
                       "top_fraction": float(top_fraction)}
        self.models = {"kind": "control", "n_models": 1, "trained": 0}

    def prepare(self, progress=None) -> None:
        from backend.training.control import ensure_control, load_control_features

        if not self.run.has(CONTROL_FEATURES):  # the one control model the features come from
            ensure_control(self.run, n_control=1, device=self.device, progress=progress)
            self.models["trained"] = 1
        self.features = load_control_features(self.run)
        self.labels = np.asarray(self.run.labels)

    def score(self, rows: slice) -> np.ndarray:
        n = self.run.n_train
        return representation_scores(self.features[n + rows.start:n + rows.stop], self.features[:n],
                                     self.labels[n + rows.start:n + rows.stop], self.labels[:n],
                                     self.config["top_fraction"])

    def self_scores(self) -> np.ndarray:
        """float32 (n_train,): similarity-weighted kNN label disagreement in the control model's feature space."""
        n = self.run.n_train
        return knn_label_disagreement(self.features[:n], self.labels[:n])
