"""`influence`: influence functions (Koh & Liang 2017, §2) at one full-data model, control model 0.

Up-weighting training image i by ε moves the parameters by -ε H⁻¹ ∇ℓ(z_i) (their eq. 1), so it changes
the test target's margin m by -ε ∇m(z)ᵀ H⁻¹ ∇ℓ(z_i). Including the image (ε = 1/n against leaving it
out) therefore raises the margin by
  score_i = -(1/n) ∇m(z)ᵀ H⁻¹ ∇ℓ(z_i)
the predicted leave-one-out effect, positive when the image helps. H is the Hessian of the mean training
loss plus the weight decay the model was trained with (wd·I) plus the damping λI (a non-convex network's
Hessian is not positive definite; Koh & Liang damp it too).

  params = "all":  every parameter; H⁻¹∇m(z) by conjugate gradient on Hessian-vector products
                   (torch.func jvp of grad: H is never built, memory stays flat in the parameter count),
                   a block of test targets solved together. Negative curvature stops a target's CG.
  params = "last": the output layer only (the other layers frozen); H is built and solved exactly.

Self-score: the self-influence (1/n) ∇ℓ(z_i)ᵀ (H + λI)⁻¹ ∇ℓ(z_i), with the same parameters, Hessian and
solver as the scores: the predicted rise of image i's own loss when it is left out (Koh & Liang §5.4, who
rank training images by it to find mislabelled ones; dattri's IF self_attribute, up to the sign and 1/n).
"""
from __future__ import annotations

import numpy as np
import torch
from torch.func import grad, jvp, vmap

from backend.attribution.base import register
from backend.attribution.gradients import CONTROL_MODEL, LAST_LAYER, Functional, control_snapshots, loss, margin
from backend.progress import offset
from backend.store.run_dir import Run
from backend.training.engine import resolve_device
from backend.training.retraining import training_data

from backend.attribution.defaults import INFLUENCE_DAMPING as DEFAULT_DAMPING  # noqa: E402
from backend.attribution.defaults import INFLUENCE_PARAMS as PARAMS  # noqa: E402
CG_ITERS = 40  # digits: LDS 0.631 at 40 iterations as at 100, in 532 s instead of 616 s on 2 busy cores
CG_TOL = 1e-5  # stop a target's CG when its residual norm falls below CG_TOL × its right-hand side's


def hessian_vector_products(fn: Functional, x: torch.Tensor, y: torch.Tensor, l2: float, chunk: int = 2048):
    """V (r, P) -> H V (r, P), H the Hessian of mean_i ℓ(x_i, y_i) + (l2/2)|θ|² over fn's chosen parameters."""
    theta = fn.flat().detach()
    n = len(x)

    def mean_loss(vector: torch.Tensor, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        logits = fn.logits(fn.unflatten(vector), xs)
        return (torch.logsumexp(logits, 1) - logits.gather(1, ys[:, None])[:, 0]).sum() / n

    def hvp(v: torch.Tensor) -> torch.Tensor:
        out = l2 * v
        for s in range(0, n, chunk):
            out = out + jvp(lambda t: grad(mean_loss)(t, x[s:s + chunk], y[s:s + chunk]), (theta,), (v,))[1]
        return out

    return vmap(hvp)


def conjugate_gradient(matvec, b: torch.Tensor, iters: int = CG_ITERS, tol: float = CG_TOL) -> torch.Tensor:
    """Solve A x = b for every row of b (r, P) at once, A symmetric positive definite (matvec: (r,P) -> (r,P))."""
    x = torch.zeros_like(b)
    r, p = b.clone(), b.clone()
    rr = (r * r).sum(1)
    active = rr.sqrt() > tol * b.norm(dim=1)
    for _ in range(iters):
        if not active.any():
            break
        ap = matvec(p)
        curvature = (p * ap).sum(1)
        active &= curvature > 0  # negative curvature: keep the iterate reached so far
        step = torch.where(active, rr / curvature.clamp_min(1e-30), torch.zeros_like(rr))
        x += step[:, None] * p
        r -= step[:, None] * ap
        rr_new = (r * r).sum(1)
        active &= rr_new.sqrt() > tol * b.norm(dim=1)
        p = r + (rr_new / rr.clamp_min(1e-30))[:, None] * p
        rr = rr_new
    return x


class InverseHessian:
    """b (r, P) -> (H + λI)⁻¹ b per row: an exact solve (H built from P Hessian-vector products) or CG."""

    def __init__(self, fn: Functional, train_x: torch.Tensor, train_y: torch.Tensor, l2: float, exact: bool):
        self.hvp = hessian_vector_products(fn, train_x, train_y, l2)
        self.factor = None
        if exact:
            eye = torch.eye(fn.n_params, dtype=train_x.dtype, device=train_x.device)
            hessian = torch.cat([self.hvp(eye[s:s + 256]) for s in range(0, fn.n_params, 256)]).double()
            self.factor = torch.linalg.cholesky((hessian + hessian.T) / 2)

    def __call__(self, b: torch.Tensor) -> torch.Tensor:
        if self.factor is None:
            return conjugate_gradient(self.hvp, b)
        return torch.cholesky_solve(b.double().T, self.factor).T.to(b.dtype)


def self_influence(inverse: InverseHessian, train_grads: torch.Tensor, block: int = 256) -> torch.Tensor:
    """float32 (n_train,): (1/n) ∇ℓ_iᵀ (H + λI)⁻¹ ∇ℓ_i, solved `block` images at a time (train_grads (n_train, P))."""
    n = len(train_grads)
    return torch.cat([(inverse(g) * g).sum(1) for g in train_grads.split(block)]) / n


def influence_scores(fn: Functional, inverse: InverseHessian, train_grads: torch.Tensor, test_x: torch.Tensor,
                     test_y: torch.Tensor) -> torch.Tensor:
    """float32 (n_test, n_train): -(1/n) ∇m(test)ᵀ (H + λI)⁻¹ ∇ℓ(train_i); train_grads (n_train, P) are ∇ℓ."""
    return -(inverse(fn.all_grads(margin, test_x, test_y)) @ train_grads.T) / len(train_grads)


@register("influence")
class Influence:
    def __init__(self, run: Run, device: str = "auto", influence_params: str = "all", damping: float | None = None):
        if influence_params not in PARAMS:
            raise ValueError(f"unknown --influence-params {influence_params!r}: choose one of {', '.join(PARAMS)}")
        damping = DEFAULT_DAMPING[influence_params] if damping is None else damping
        self.run, self.device = run, resolve_device(device)
        self.config = {"params": influence_params, "damping": float(damping),
                       "weight_decay": float(run.manifest["hparams"]["weight_decay"]),
                       "solver": "exact" if influence_params == "last" else f"cg({CG_ITERS}, tol {CG_TOL:g})",
                       "test_output": "margin", "train_output": "loss"}
        self.models = dict(CONTROL_MODEL)

    def prepare(self, progress=None) -> None:
        run = self.run
        self.data = data = training_data(run, str(self.device))
        [(_, model)] = control_snapshots(run, data, [int(run.manifest["hparams"]["epochs"])], offset(progress, 0, 2))
        names = LAST_LAYER[run.manifest["arch"]] if self.config["params"] == "last" else None
        self.fn = Functional(model, names)
        self.train_grads = self.fn.all_grads(loss, data.train_x, data.train_y)
        self.inverse = InverseHessian(self.fn, data.train_x, data.train_y,
                                      self.config["weight_decay"] + self.config["damping"], self.config["params"] == "last")
        if progress:
            progress(2, 2, "step")

    def score(self, rows: slice) -> np.ndarray:
        n, data = self.run.n_train, self.data
        targets = slice(n + rows.start, n + rows.stop)
        scores = influence_scores(self.fn, self.inverse, self.train_grads, data.targets_x[targets], data.targets_y[targets])
        return scores.cpu().numpy().astype(np.float32)

    def self_scores(self) -> np.ndarray:
        """float32 (n_train,): the self-influence of every training image (self_influence)."""
        return self_influence(self.inverse, self.train_grads).cpu().numpy()
