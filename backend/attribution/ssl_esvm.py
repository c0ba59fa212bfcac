"""`ssl-esvm`: seed 002's attribution from one self-supervised encoder and an exemplar SVM per target.

Seed 002 (Singla et al. 2023, "A simple and efficient baseline for data attribution on images", §3 and
its released features_to_topk_matrix.py) embeds every image with a self-supervised encoder trained on
the training images (here SimCLR, backend.attribution.ssl), then, for each test target, fits a linear
SVM with the target's embedding as the only positive and the training images *of the target's class*
as the negatives (LinearSVC, class_weight="balanced", tol 1e-6, max_iter 10 000, as released). The release's
C = 0.1 gives way to C = 0.01, which `methods-eval --select` chose on digits (validation LDS 0.240 against 0.230).
A training image's attribution is its signed distance to that hyperplane, w·x + b: the higher, the more
the SVM takes it for the target. The ℓ2 variant (`--esvm-score l2`, the paper's kNN baseline) ranks by
−‖e_target − e_i‖ instead.

The paper ranks only the target's class. Scores here must be comparable across all training images
(positive = raises the margin, 0 = no effect), so a same-class image scores its value minus the lowest
same-class value (≥ 0: the farthest same-class image scores 0) and every image of another class 0. The
ranking within the class is the paper's, and no image of another class outranks one of the target's.

Self-score: similarity-weighted kNN label disagreement in the encoder's embedding space
(representation.knn_label_disagreement, k = 10), for both variants. The encoder never saw a label, so an image
whose label differs from those of its nearest embeddings is evidence against that label alone. The exemplar
SVM's own-class margin (image i as the positive against the rest of its class) was the alternative: it would
fit one more SVM per training image and measures how distinctive the image is, which an atypical but
correctly labelled image shares.

The encoder's embeddings are stored in the run (attribution/ssl-esvm/embeddings.npy, with encoder.json
holding the config they came from), so a resumed or repeated attribution reuses them; other settings
retrain.
"""
from __future__ import annotations

import time

import numpy as np

from backend.attribution.base import register
from backend.store.artifacts import read_array, read_json, write_array, write_json
from backend.store.atomic import transaction
from backend.store.run_dir import Run
from backend.store.schema import SSL_EMBEDDINGS, SSL_ENCODER
from backend.training.seeds import SSL_STREAM, stream_seed

SCORES = ("svm", "l2")
DEFAULT_C = 0.01


def exemplar_svm(target: np.ndarray, negatives: np.ndarray, c: float = DEFAULT_C):
    """The fitted LinearSVC separating target (d,) (label 1) from negatives (n, d) (label 0), seed 002's recipe."""
    from sklearn.svm import LinearSVC

    x = np.concatenate([target[None, :], negatives]).astype(np.float64)
    y = np.zeros(len(x), dtype=np.int64)
    y[0] = 1
    return LinearSVC(C=c, class_weight="balanced", tol=1e-6, max_iter=10_000).fit(x, y)


def exemplar_scores(target_embeddings: np.ndarray, target_labels: np.ndarray, train_embeddings: np.ndarray,
                    train_labels: np.ndarray, score: str = "svm", c: float = DEFAULT_C) -> np.ndarray:
    """float32 (T, n_train): each target's same-class training images by exemplar-SVM value (or −ℓ2 distance),
    shifted so the lowest of them is 0; images of other classes 0 (see the module docstring).

    target_embeddings : (T, d); train_embeddings : (n_train, d); labels int of shapes (T,) and (n_train,).
    """
    out = np.zeros((len(target_embeddings), len(train_embeddings)), dtype=np.float32)
    for row, (e, label) in enumerate(zip(target_embeddings, target_labels)):
        same = np.flatnonzero(train_labels == label)
        if not len(same):
            continue
        negatives = train_embeddings[same]
        if score == "svm":
            value = exemplar_svm(e, negatives, c).decision_function(negatives.astype(np.float64))
        else:
            value = -np.linalg.norm(negatives.astype(np.float64) - e, axis=1)
        out[row, same] = value - value.min()
    return out


@register("ssl-esvm")
class SslEsvm:
    def __init__(self, run: Run, device: str = "auto", score: str = "svm", c: float = DEFAULT_C,
                 epochs: int | None = None, temperature: float | None = None):
        from backend.attribution.ssl import SslConfig  # torch: imported when the method is made, not registered

        if score not in SCORES:
            raise ValueError(f"unknown --esvm-score {score!r}: use svm or l2")
        self.run, self.device = run, device
        given = {key: value for key, value in (("epochs", epochs), ("temperature", temperature)) if value is not None}
        self.ssl = SslConfig(**given, seed=stream_seed(int(run.manifest["seed"]), 0, SSL_STREAM))
        self.config = {"score": score, "negatives": "training images of the target's class",
                       "shift": "minus the lowest same-class value; other classes 0", "ssl": self.ssl.to_json(),
                       **({"C": c, "class_weight": "balanced"} if score == "svm" else {})}
        self.score_kind, self.c = score, c
        self.models = {"kind": "ssl-encoder", "n_models": 1, "trained": 0}

    def prepare(self, progress=None) -> None:
        held = read_json(self.run.dir, SSL_ENCODER, missing_ok=True)
        if held is None or held["config"] != self.ssl.to_json() or not self.run.has(SSL_EMBEDDINGS):
            self._train(progress)
        self.embeddings = read_array(self.run.dir, SSL_EMBEDDINGS, self.run.sizes)
        self.labels = np.asarray(self.run.labels)
        encoder = read_json(self.run.dir, SSL_ENCODER)
        self.models.update(encoder_seconds=encoder["seconds"], final_loss=encoder["final_loss"])

    def _train(self, progress) -> None:
        from backend.attribution.ssl import embed, train_encoder
        from backend.training.engine import resolve_device

        device = resolve_device(self.device)
        started = time.time()
        images = self.run.images
        model, loss = train_encoder(images[:self.run.n_train], self.ssl, device, progress)
        embeddings = embed(model, images, device)
        with transaction(self.run.dir, "attribute"):  # the embeddings and their config appear together
            write_array(self.run.dir, SSL_EMBEDDINGS, embeddings)
            write_json(self.run.dir, SSL_ENCODER, {"config": self.ssl.to_json(), "device": str(device),
                                                   "seconds": round(time.time() - started, 3),
                                                   "final_loss": round(loss, 6)})
        self.models["trained"] = 1

    def self_scores(self) -> np.ndarray:
        """float32 (n_train,): similarity-weighted kNN label disagreement among the training images' SSL embeddings."""
        from backend.attribution.representation import knn_label_disagreement

        n = self.run.n_train
        return knn_label_disagreement(self.embeddings[:n], self.labels[:n])

    def score(self, rows: slice) -> np.ndarray:
        n = self.run.n_train
        return exemplar_scores(self.embeddings[n + rows.start:n + rows.stop], self.labels[n + rows.start:n + rows.stop],
                               self.embeddings[:n], self.labels[:n], self.score_kind, self.c)
