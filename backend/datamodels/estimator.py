"""`BatchedLasso`: the batched solver (lasso.py) as a scikit-learn-shaped estimator over plain arrays.

For users who have their own masks and margins and want many targets' datamodels at one λ without a run:
`BatchedLasso(alpha=0.01).fit(masks, margins).coef_` solves scikit-learn's `Lasso(alpha)` problem for every
column of `margins` at once (lasso.py's objective, every row used: no eq. 9 exclusion, as no column here is
known to be a training image). The run's `fit` stage, with its λ path and validation, is `fit_datamodels`.
"""
from __future__ import annotations

import numpy as np
import torch

from backend.datamodels.lasso import MaskRows, TargetBlock, lasso_solve


class BatchedLasso:
    """min_{w,b} 1/(2M)·‖y − b − Xw‖² + alpha·‖w‖₁ for every column y of the margins (scikit-learn's Lasso).

    alpha : the L1 penalty λ, one for every target
    tol : the solver's stopping rule, a duality gap relative to each target's ‖y_c‖²/(2M)
    dtype : "float64" (agrees with scikit-learn to ~1e-10) or "float32" (half the memory, ~1e-6)
    device : "cpu", "cuda", ...
    """

    def __init__(self, alpha: float = 1.0, *, tol: float = 1e-4, max_iter: int = 1000, dtype: str = "float64",
                 device: str = "cpu"):
        self.alpha, self.tol, self.max_iter, self.dtype, self.device = alpha, tol, max_iter, dtype, device

    def fit(self, masks: np.ndarray, margins: np.ndarray) -> "BatchedLasso":
        """masks : ndarray of shape (n_models, n_train), bool or 0/1 (a memmap is fine);
        margins : ndarray of shape (n_models,) or (n_models, n_targets).

        Sets coef_ (n_targets, n_train) or (n_train,) for 1-D margins, as scikit-learn does; intercept_
        (n_targets,) or a float; n_iter_ (n_targets,) the solver's steps.
        """
        masks, margins = np.asarray(masks), np.asarray(margins, dtype=np.float64)
        if masks.ndim != 2 or not (masks.dtype == bool or np.isin(masks, (0, 1)).all()):
            raise ValueError(f"masks must be a 2-D 0/1 or bool array of shape (n_models, n_train), got shape {masks.shape}")
        if self.alpha <= 0:
            raise ValueError(f"alpha must be positive, got {self.alpha}: for alpha=0 use least squares")
        y = margins[:, None] if margins.ndim == 1 else margins
        if y.ndim != 2 or len(y) != len(masks) or not np.isfinite(y).all():
            raise ValueError(f"margins must be finite, of shape ({len(masks)},) or ({len(masks)}, n_targets), "
                             f"got shape {margins.shape}")
        dtype = {"float64": torch.float64, "float32": torch.float32}[self.dtype]
        rows = MaskRows(masks.astype(bool, copy=False), np.arange(len(masks)), device=self.device, dtype=dtype)
        # n_train=0: every column is a "test" target, fitted on every row.
        block = TargetBlock(rows, None, np.arange(y.shape[1]), 0, y=y)
        lam = torch.full((y.shape[1],), float(self.alpha), dtype=dtype)
        w, b, stats = lasso_solve(block, lam, tol=self.tol, max_iter=self.max_iter)
        coef, intercept = w.T.double().cpu().numpy(), b.double().cpu().numpy()
        self.coef_ = coef[0] if margins.ndim == 1 else coef
        self.intercept_ = float(intercept[0]) if margins.ndim == 1 else intercept
        self.n_iter_ = stats.n_iter.cpu().numpy()
        return self

    def predict(self, masks: np.ndarray) -> np.ndarray:
        """Predicted margins, shape (n_models,) or (n_models, n_targets) like the margins fitted."""
        return np.asarray(masks, dtype=np.float64) @ np.asarray(self.coef_).T + self.intercept_
