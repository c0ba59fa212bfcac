"""`trak`: TRAK (Park et al. 2023, Algorithm 1), averaged over an ensemble of the run's own α-subset models.

For each model m of the ensemble (run model m, retrained from its own subset and seed: the same model the
run trained):
  φ_m(z) = R_mᵀ ∇θ f(z; θ_m) / sqrt(d)        projected gradient of f = log(p / (1 - p)), shape (d,);
                                             R_m drawn per model (seeds.PROJECTION_STREAM, index m), as in
                                             traker and dattri
  Φ_m    = [φ_m(z_1); ...; φ_m(z_n)]          the training images' features, shape (n_train, d)
  A_m    = (Φ_mᵀ Φ_m + λ_m I)⁺ Φ_mᵀ           shape (d, n_train), λ_m = λ · tr(Φ_mᵀΦ_m) / d
The score of training image i for test target z is
  τ(z)_i = (1/M Σ_m φ_m(z)ᵀ A_m)_i · (1/M Σ_m Q_m)_ii,    Q_m = diag(1 - p_m(z_i))
(the paper averages the kernel term and the 1 - p reweighting separately; so does dattri). Positive τ means
that including image i raises f(z): one Newton step of the linearised logistic loss, whose gradient at z_i
is -(1 - p_i) ∇f(z_i). The pseudo-inverse is taken through the smaller of the d × d kernel and the
n × n Gram matrix ((ΦᵀΦ + λI)⁺Φᵀ = Φᵀ(ΦΦᵀ + λI)⁺), in float64.

Why the ridge (issue 26). φ(z)ᵀ(ΦᵀΦ)⁻¹Φᵀ is an ordinary least-squares fit in d features over n_train
points. The paper's setting has n_train ≫ d; digits has 1,297 training images, and our old default
d = 2,048 with λ = 0 made Φ_m full row rank: the fit interpolated (every leverage 1, the minimum-norm
solution), and its scores were noise amplified by the smallest eigenvalues of ΦΦᵀ. Held-out LDS on
digits (10 models) fell with d/n_train: 0.56 at d = 128, 0.45 at 512 (dattri's default), 0.28 at 1,024
and 2,048. A ridge relative to the kernel's mean eigenvalue (λ, scale-free, so one default serves any
architecture's gradient scale) removes that noise at every d and lets a larger d help: the defaults
(defaults.TRAK_PROJ_DIM, TRAK_DAMPING) were chosen on half of the digits held-out models and scored on
the other half (README, "TRAK's ridge"). The output function, Q and the ensemble average already matched dattri;
the per-model projection is the reference's too (it moves LDS by < 0.01 here).

Self-score: TRAK's self-influence, the score of training image i for z = z_i itself,
  τ(z_i)_i = (1/M Σ_m φ_m(z_i)ᵀ (Φ_mᵀΦ_m + λ_m I)⁺ φ_m(z_i)) · (1/M Σ_m Q_m)_ii
the ensemble's mean leverage of i times its mean 1 − p (dattri's TRAK self_attribute: the kernel's diagonal,
reweighted by Q). With λ = 0 and d ≥ n_train Φ_m has full row rank, every leverage is 1 and the self-score
is the ensemble's mean 1 − p_i: the estimator then ranks by confidence alone.
"""
from __future__ import annotations

import numpy as np
import torch

from backend.attribution.base import register
from backend.attribution.gradients import Functional, Projector, train_snapshots, trak_output
from backend.progress import offset
from backend.store.run_dir import Run
from backend.training.engine import resolve_device
from backend.training.retraining import training_data
from backend.training.subsets import model_seed, model_subset

from backend.attribution.defaults import TRAK_DAMPING as DEFAULT_DAMPING  # noqa: E402
from backend.attribution.defaults import TRAK_MODELS as DEFAULT_MODELS  # noqa: E402
from backend.attribution.defaults import TRAK_PROJ_DIM as DEFAULT_PROJ_DIM  # noqa: E402
from backend.attribution.defaults import TRAK_PROJECTIONS as PROJECTIONS  # noqa: E402
RTOL = 1e-10  # eigenvalues below RTOL × the largest are treated as zero by the pseudo-inverse


def kernel_weights(phi: torch.Tensor, damping: float) -> torch.Tensor:
    """A = (ΦᵀΦ + λ' I)⁺ Φᵀ, float64 of shape (d, n), from Φ of shape (n, d), λ' = damping · tr(ΦᵀΦ) / d."""
    phi = phi.double()
    n, d = phi.shape
    damping = damping * float((phi * phi).sum()) / d
    if d <= n:
        return torch.linalg.pinv(phi.T @ phi + damping * torch.eye(d, dtype=phi.dtype, device=phi.device),
                                 hermitian=True, rtol=RTOL) @ phi.T
    return phi.T @ torch.linalg.pinv(phi @ phi.T + damping * torch.eye(n, dtype=phi.dtype, device=phi.device),
                                     hermitian=True, rtol=RTOL)


@register("trak")
class Trak:
    def __init__(self, run: Run, device: str = "auto", proj_dim: int = DEFAULT_PROJ_DIM, models: int = DEFAULT_MODELS,
                 proj_type: str = "gaussian", damping: float = DEFAULT_DAMPING):
        if proj_type not in PROJECTIONS:
            raise ValueError(f"unknown projection {proj_type!r}: choose one of {', '.join(PROJECTIONS)}")
        n_run = int(run.manifest["n_models"])
        if models > n_run:
            raise ValueError(f"--models {models} asks for more models than the run's {n_run}: give at most {n_run}")
        self.run, self.device = run, resolve_device(device)
        self.config = {"proj_dim": int(proj_dim), "proj_type": proj_type, "models": int(models),
                       "damping": float(damping), "damping_scale": "tr(ΦᵀΦ)/d",
                       "projection_per_model": True, "output": "log(p/(1-p))"}
        self.models = {"kind": "alpha-subset", "n_models": int(models), "indices": list(range(models)),
                       "trained": int(models), "alpha": float(run.manifest["alpha"])}

    def prepare(self, progress=None) -> None:
        run, M = self.run, self.config["models"]
        seed = int(run.manifest["seed"])
        self.data = data = training_data(run, str(self.device))
        subsets = np.stack([model_subset(seed, m, run.n_train, float(run.manifest["alpha"])) for m in range(M)])
        epochs = int(run.manifest["hparams"]["epochs"])
        trained = train_snapshots(run, data, subsets, [model_seed(seed, m) for m in range(M)], [epochs],
                                  progress=offset(progress, 0, 2 * M))
        self.ensemble, one_minus_p = [], torch.zeros(run.n_train, dtype=torch.float64, device=self.device)
        leverage = torch.zeros(run.n_train, dtype=torch.float64, device=self.device)
        for m, [(_, model)] in enumerate(trained):
            fn = Functional(model)
            project = self.projector(fn, m)
            phi = torch.cat([project(g) for _, g in fn.per_example_grads(trak_output, data.train_x, data.train_y)])
            with torch.no_grad():
                probs = torch.softmax(fn.logits(fn.variables(), data.train_x), 1)
            one_minus_p += 1 - probs.gather(1, data.train_y[:, None])[:, 0].double()
            weights = kernel_weights(phi, self.config["damping"])
            leverage += (phi.double() * weights.T).sum(1)  # diag Φ_m (Φ_mᵀΦ_m + λI)⁺ Φ_mᵀ
            self.ensemble.append((fn, weights.float()))
            if progress:
                progress(M + m + 1, 2 * M, "model")
        self.q = (one_minus_p / M).float()
        self.self_kernel = (leverage / M).float()

    def projector(self, fn: Functional, m: int) -> Projector:
        """Model m's projection R_m, drawn again when needed: holding the ensemble's M projections at once would
        take M × n_params × d floats (800 MB for the digits MLP at M = 10, d = 2,048; 8.5 GB at ResNet-9 width
        0.125), and drawing one costs 0.2 s for the digits MLP, beside its 500 targets' gradients."""
        return Projector(fn.n_params, self.config["proj_dim"], self.config["proj_type"], int(self.run.manifest["seed"]),
                         self.device, index=m)

    def score(self, rows: slice) -> np.ndarray:
        n = self.run.n_train
        x, y = self.data.targets_x[n + rows.start:n + rows.stop], self.data.targets_y[n + rows.start:n + rows.stop]
        total = torch.zeros(len(x), n, device=self.device)
        for m, (fn, weights) in enumerate(self.ensemble):
            project = self.projector(fn, m)
            for start, g in fn.per_example_grads(trak_output, x, y):
                total[start:start + len(g)] += project(g) @ weights
        return (total / len(self.ensemble) * self.q).cpu().numpy().astype(np.float32)

    def self_scores(self) -> np.ndarray:
        """float32 (n_train,): each training image's TRAK score for itself (see the module docstring)."""
        return (self.self_kernel * self.q).cpu().numpy()
