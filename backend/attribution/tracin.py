"""`tracin`: TracInCP (Pruthi et al. 2020, eq. 3) over checkpoints of one full-data model, control model 0.

An SGD step on training image i moves the parameters by -η ∇ℓ(z_i), so to first order it changes the
test target's margin m by -η ∇m(z) · ∇ℓ(z_i). Summed over checkpoints θ_c saved while training,
  score_i = -Σ_c η_c ∇m(z; θ_c) · ∇ℓ(z_i; θ_c)
positive when the image's steps raise the margin. η_c is the mean learning rate of the epoch that ends
at checkpoint c (each image is visited once per epoch). The checkpoints are recomputed by retraining
control model 0 (seconds on digits), not stored: the run keeps no parameters.

Self-score: TracIn's self-influence Σ_c η_c ‖∇ℓ(z_i; θ_c)‖², the loss's own first-order drop from the
image's steps (Pruthi et al. §4.1, their mislabel experiment): an image whose label contradicts the rest
keeps a large loss gradient through training, so it scores high.
"""
from __future__ import annotations

import numpy as np
import torch

from backend.attribution.base import register
from backend.attribution.gradients import CONTROL_MODEL, Functional, control_snapshots, loss, margin
from backend.progress import offset
from backend.store.run_dir import Run
from backend.training.engine import resolve_device
from backend.training.retraining import training_data


def checkpoint_epochs(epochs: int, n: int) -> list[int]:
    """n epochs spread evenly over training, the last one included: e.g. 30 epochs, 5 checkpoints -> 6, 12, ..., 30."""
    return sorted({int(round(epochs * (c + 1) / n)) for c in range(n)})


@register("tracin")
class TracIn:
    def __init__(self, run: Run, device: str = "auto", checkpoints: int | None = None):
        epochs = int(run.manifest["hparams"]["epochs"])
        # Default every epoch: `methods-eval --select` chose it on digits (1, 5, 10 and 30 of 30 epochs searched).
        checkpoints = epochs if checkpoints is None else checkpoints
        if checkpoints > epochs:
            raise ValueError(f"--checkpoints {checkpoints} exceeds the run's {epochs} epochs: give at most {epochs}")
        self.run, self.device = run, resolve_device(device)
        self.config = {"checkpoints": int(checkpoints), "epochs": checkpoint_epochs(epochs, checkpoints),
                       "test_output": "margin", "train_output": "loss"}
        self.models = dict(CONTROL_MODEL)

    def prepare(self, progress=None) -> None:
        run = self.run
        self.data = data = training_data(run, str(self.device))
        snapshots = control_snapshots(run, data, self.config["epochs"], offset(progress, 0, 2))
        self.checkpoints = [(lr, Functional(model)) for lr, model in snapshots]
        self.train_grads = [fn.all_grads(loss, data.train_x, data.train_y) for _, fn in self.checkpoints]
        if progress:
            progress(2, 2, "step")

    def score(self, rows: slice) -> np.ndarray:
        n, data = self.run.n_train, self.data
        x, y = data.targets_x[n + rows.start:n + rows.stop], data.targets_y[n + rows.start:n + rows.stop]
        total = torch.zeros(len(x), n, device=self.device)
        for (lr, fn), train_grads in zip(self.checkpoints, self.train_grads):
            total -= lr * (fn.all_grads(margin, x, y) @ train_grads.T)
        return total.cpu().numpy().astype(np.float32)

    def self_scores(self) -> np.ndarray:
        """float32 (n_train,): Σ_c η_c ‖∇ℓ(z_i; θ_c)‖² over the checkpoints the scores use."""
        total = torch.zeros(self.run.n_train, device=self.device)
        for (lr, _), train_grads in zip(self.checkpoints, self.train_grads):
            total += lr * (train_grads * train_grads).sum(1)
        return total.cpu().numpy()
