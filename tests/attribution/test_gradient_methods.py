"""trak, influence and tracin against independent oracles: leave-one-out retraining of a convex model,
TRAK's formula in numpy on autograd gradients, hand-summed TracIn dot products, and dattri."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits

from backend.attribution.gradients import Functional, Projector, loss, train_snapshots
from backend.attribution.influence import InverseHessian, influence_scores, self_influence
from backend.attribution.methods import make
from backend.attribution.store import read_meta, read_scores, read_self_scores
from backend.store.run_dir import Run
from backend.training.engine import margins_of, train_models
from backend.training.retraining import training_data
from backend.training.subsets import model_seed, model_subset
from precompute.cli import main
from tests.conftest import run_cli


def _autograd_grad(model, x, y, output):
    """One example's gradient, by plain autograd (no vmap), flattened in named_parameters order."""
    params = list(model.parameters())
    logits = model(x[None, None])[0, 0]
    return torch.cat([g.reshape(-1) for g in torch.autograd.grad(output(logits, y), params)]).double().numpy()


def _margin(logits, y):
    others = torch.cat([logits[:y], logits[y + 1:]])
    return logits[y] - others.max()


def _trak_f(logits, y):
    log_p = F.log_softmax(logits, 0)[y]
    return log_p - torch.log1p(-log_p.exp())


def _loss(logits, y):
    return F.cross_entropy(logits[None], y[None])


def test_snapshots_are_the_models_the_engine_trains(narrow_run):
    """single_models' slicing of a batched module, and the on_epoch hook, leave training unchanged."""
    run = Run(narrow_run)
    data = training_data(run, "cpu")
    subsets = np.stack([model_subset(0, m, run.n_train, 0.5) for m in range(2)])
    seeds = [model_seed(0, m) for m in range(2)]
    snapshots = train_snapshots(run, data, subsets, seeds, [3])
    margins, _ = train_models(data, subsets, seeds, "mlp", run.manifest["hparams"])
    stored = np.load(narrow_run / "margins.npy")[:2]
    for m, [(lr, model)] in enumerate(snapshots):
        with torch.no_grad():
            logits = model(data.targets_x[None])[0]
        ours = margins_of(logits[None], data.targets_y)[0].numpy()
        np.testing.assert_allclose(ours, margins[m], atol=1e-4)
        np.testing.assert_allclose(ours, stored[m], atol=1e-3)
        assert 0 < lr < 0.1


def test_a_projection_held_or_redrawn_block_by_block_is_the_same():
    g = torch.randn(5, 20000)
    for kind in ("gaussian", "rademacher"):
        held = Projector(20000, 64, kind, run_seed=3, device=torch.device("cpu"))
        streamed = Projector(20000, 64, kind, run_seed=3, device=torch.device("cpu"), resident_bytes=0)
        assert held.resident is not None and streamed.resident is None
        torch.testing.assert_close(held(g), streamed(g), rtol=1e-4, atol=1e-4)
    assert not torch.equal(Projector(100, 8, "gaussian", 3, torch.device("cpu")).resident,
                           Projector(100, 8, "gaussian", 4, torch.device("cpu")).resident)


class _LogisticRegression(torch.nn.Module):
    """Multinomial logistic regression shaped like the engine's K = 1 models: x (1, B, C, H, W) -> (1, B, classes)."""

    def __init__(self, d, classes):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1, d, classes, dtype=torch.float64))
        self.b = torch.nn.Parameter(torch.zeros(1, 1, classes, dtype=torch.float64))

    def forward(self, x):
        return torch.baddbmm(self.b, x.flatten(2), self.w)


def _fit(model, x, y, l2, keep):
    """Minimise (1/n) Σ_{i in keep} CE_i + (l2/2)|θ|² to convergence (LBFGS), in place: leaving image i out
    removes its term and nothing else (1/n, not 1/(n-1), which would also rescale the regulariser)."""
    opt = torch.optim.LBFGS(model.parameters(), lr=1, max_iter=500, tolerance_grad=1e-12, tolerance_change=1e-15,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        objective = F.cross_entropy(model(x[keep][None])[0], y[keep], reduction="sum") / len(x) + l2 / 2 * sum((p * p).sum() for p in model.parameters())
        objective.backward()
        return objective

    for _ in range(3):
        opt.step(closure)


def _margins(model, x, y):
    with torch.no_grad():
        logits = model(x[None])[0]
    correct = logits.gather(1, y[:, None])[:, 0]
    return correct - logits.scatter(1, y[:, None], float("-inf")).amax(1)


@pytest.mark.parametrize("exact", [True, False], ids=["exact", "cg"])
def test_influence_matches_leave_one_out_retraining_of_a_convex_model(exact):
    digits = load_digits()
    pick = np.flatnonzero(digits.target < 3)[:160]
    x = torch.tensor(digits.images[pick] / 16.0)[:, None]  # (n, 1, 8, 8)
    y = torch.tensor(digits.target[pick])
    train, test = slice(0, 120), slice(120, 126)
    l2 = 0.05
    model = _LogisticRegression(64, 3)
    _fit(model, x[train], y[train], l2, slice(None))
    fn = Functional(model)
    train_grads = fn.all_grads(loss, x[train], y[train])
    inverse = InverseHessian(fn, x[train], y[train], l2, exact)
    predicted = influence_scores(fn, inverse, train_grads, x[test], y[test]).numpy()  # (6, 120)
    full = _margins(model, x[test], y[test]).numpy()
    removed = np.arange(0, 120, 3)  # 40 leave-one-out retrains
    actual = np.empty((6, len(removed)))
    for c, i in enumerate(removed):
        loo = _LogisticRegression(64, 3)
        loo.load_state_dict(model.state_dict())
        _fit(loo, x[train], y[train], l2, np.delete(np.arange(120), i))
        actual[:, c] = full - _margins(loo, x[test], y[test]).numpy()  # including image i raises the margin by this
    for j in range(6):
        r = np.corrcoef(predicted[j, removed], actual[j])[0, 1]
        assert r > 0.99, (j, r)
    # the sign and the scale (1/n) are the leave-one-out effect's, not just its ranking
    np.testing.assert_allclose(predicted[:, removed], actual, rtol=0.1, atol=0.05 * np.abs(actual).max())


@pytest.mark.parametrize("exact", [True, False], ids=["exact", "cg"])
def test_influence_self_scores_are_the_explicit_damped_hessian_inverse_of_a_logistic_regression(exact):
    """(1/n) ∇ℓ_iᵀ (H + λI)⁻¹ ∇ℓ_i against H built by torch.autograd.functional.hessian and inverted by numpy."""
    digits = load_digits()
    pick = np.flatnonzero(digits.target < 3)[:90]
    x, y = torch.tensor(digits.images[pick] / 16.0)[:, None], torch.tensor(digits.target[pick])
    l2 = 0.05
    model = _LogisticRegression(64, 3)
    _fit(model, x, y, l2, slice(None))
    fn = Functional(model)
    own = self_influence(InverseHessian(fn, x, y, l2, exact), fn.all_grads(loss, x, y), block=32).numpy()
    w0, b0 = model.w.detach().clone(), model.b.detach().clone()

    def objective(flat):
        w, b = flat[:w0.numel()].reshape(w0.shape), flat[w0.numel():].reshape(b0.shape)
        return F.cross_entropy(torch.baddbmm(b, x[None].flatten(2), w)[0], y) + l2 / 2 * (flat * flat).sum()

    hessian = torch.autograd.functional.hessian(objective, torch.cat([w0.reshape(-1), b0.reshape(-1)])).numpy()
    grads = np.stack([_autograd_grad(model, x[i], y[i], _loss) for i in range(len(x))])
    expected = np.einsum("ip,pq,iq->i", grads, np.linalg.inv(hessian), grads) / len(x)
    assert (expected > 0).all()
    np.testing.assert_allclose(own, expected, rtol=1e-4 if exact else 1e-2)


@pytest.mark.parametrize("n, d", [(60, 20), (20, 60)])
def test_trak_ridge_is_relative_to_the_kernels_mean_eigenvalue(n, d):
    """A = (ΦᵀΦ + λ tr(ΦᵀΦ)/d I)⁻¹Φᵀ by numpy's inverse, through the d × d kernel (d < n) and the n × n Gram
    matrix (d > n) alike; and φ(z)ᵀA does not change when every gradient is scaled (λ is free of their scale)."""
    from backend.attribution.trak import kernel_weights

    rng = np.random.default_rng(0)
    phi, z = rng.normal(size=(n, d)), rng.normal(size=(3, d))
    kernel = phi.T @ phi
    expected = z @ np.linalg.inv(kernel + 0.5 * np.trace(kernel) / d * np.eye(d)) @ phi.T
    got = z @ kernel_weights(torch.from_numpy(phi), 0.5).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12)
    scaled = 1e3 * z @ kernel_weights(torch.from_numpy(1e3 * phi), 0.5).numpy()
    np.testing.assert_allclose(scaled, expected, rtol=1e-9, atol=1e-12)


def test_trak_with_a_full_rank_projection_is_the_linearised_estimator(narrow_run):
    """proj_dim = the parameter count: a square random projection cancels out of φ(ΦᵀΦ)⁻¹Φᵀ, so TRAK must equal
    its formula computed in numpy from autograd gradients without any projection."""
    run = Run(narrow_run)
    method = make("trak", run, device="cpu", proj_dim=310, models=1, damping=0.0)
    method.prepare()
    scores = method.score(slice(0, 8))
    [(fn, _)] = method.ensemble
    assert fn.n_params == 310
    data = method.data
    phi = np.stack([_autograd_grad(fn.model, data.train_x[i], data.train_y[i], _trak_f) for i in range(run.n_train)])
    with torch.no_grad():
        p = F.softmax(fn.model(data.train_x[None])[0].double(), 1).gather(1, data.train_y[:, None])[:, 0].numpy()
    n = run.n_train
    phi_test = np.stack([_autograd_grad(fn.model, data.targets_x[n + j], data.targets_y[n + j], _trak_f) for j in range(8)])
    # ΦᵀΦ is singular by construction (f's gradient in the output bias sums to 0; always-blank pixels have none):
    # the pseudo-inverse, whose φ(ΦᵀΦ)⁺Φᵀ a square invertible projection also leaves unchanged
    expected = phi_test @ np.linalg.pinv(phi.T @ phi, rcond=1e-10, hermitian=True) @ phi.T * (1 - p)[None]
    assert np.corrcoef(scores.ravel(), expected.ravel())[0, 1] > 0.999
    np.testing.assert_allclose(scores, expected, atol=0.02 * np.abs(expected).max())
    # self-influence: the kernel's diagonal (each image's leverage) times its 1 - p, as dattri's self_attribute
    leverage = np.einsum("ip,pq,iq->i", phi, np.linalg.pinv(phi.T @ phi, rcond=1e-10, hermitian=True), phi)
    own = method.self_scores()
    assert 0 < leverage.min() and leverage.max() <= 1 + 1e-6 and leverage.std() > 0.01
    np.testing.assert_allclose(own, leverage * (1 - p), rtol=0.02, atol=1e-4 * np.abs(own).max())


def test_tracin_is_the_learning_rate_weighted_sum_of_gradient_dot_products(narrow_run):
    run = Run(narrow_run)
    method = make("tracin", run, device="cpu", checkpoints=2)
    method.prepare()
    assert method.config["epochs"] == [2, 3] and len(method.checkpoints) == 2
    scores = method.score(slice(3, 6))
    data, n = method.data, run.n_train
    expected, expected_self = np.zeros((3, n)), np.zeros(n)
    for lr, fn in method.checkpoints:
        train = np.stack([_autograd_grad(fn.model, data.train_x[i], data.train_y[i], _loss) for i in range(n)])
        expected_self += lr * (train * train).sum(1)  # self-influence: Σ_c η_c |∇ℓ(z_i; θ_c)|²
        for row, j in enumerate(range(3, 6)):
            test = _autograd_grad(fn.model, data.targets_x[n + j], data.targets_y[n + j], _margin)
            expected[row] -= lr * train @ test
    np.testing.assert_allclose(scores, expected, rtol=1e-3, atol=1e-5 * np.abs(expected).max())
    np.testing.assert_allclose(method.self_scores(), expected_self, rtol=1e-3, atol=1e-6 * expected_self.max())


def test_the_cli_stores_each_method_with_its_config(narrow_run, tmp_path):
    narrow_run = Path(shutil.copytree(narrow_run, tmp_path / "run"))  # it writes: its own copy of the shared run
    for method, flags, config in [
        ("trak", ["--models", "2", "--proj-dim", "64", "--proj-type", "rademacher"],
         {"proj_dim": 64, "proj_type": "rademacher", "models": 2}),
        ("influence", ["--influence-params", "last", "--damping", "0.1"], {"params": "last", "damping": 0.1}),
        ("tracin", ["--checkpoints", "3"], {"checkpoints": 3, "epochs": [1, 2, 3]}),
    ]:
        summary = json.loads(run_cli("attribute", "--run", narrow_run, "--method", method, "--device", "cpu",
                                     *flags, "--json", in_process=True).stdout)
        meta = read_meta(Run(narrow_run), method)
        assert {key: meta["config"][key] for key in config} == config
        assert meta["models"] == summary["models"]
        assert meta["models"]["kind"] == ("alpha-subset" if method == "trak" else "control")
        scores = read_scores(Run(narrow_run), method)
        assert scores.shape == (500, 1297) and np.isfinite(scores).all() and np.abs(scores).max() > 0
        own = read_self_scores(Run(narrow_run), method)
        assert own.shape == (1297,) and own.dtype == np.float32 and np.isfinite(own).all() and (own > 0).all()


@pytest.mark.parametrize("method, flags, message", [
    ("tracin", ["--proj-dim", "64"], "--proj-dim applies to --method trak, not tracin: drop it"),
    ("trak", ["--influence-params", "last"], "--influence-params applies to --method influence, not trak"),
    ("datamodels", ["--damping", "0.1"], "--damping applies to --method trak or influence, not datamodels"),
    ("trak", ["--models", "4"], "--models 4 asks for more models than the run's 3: give at most 3"),
    ("tracin", ["--checkpoints", "9"], "--checkpoints 9 exceeds the run's 3 epochs: give at most 3"),
    ("trak", ["--proj-dim", "0"], "--proj-dim: 0 is outside 1..1,048,576"),
    ("influence", ["--damping", "-1"], "-1 is negative"),
])
def test_a_flag_that_does_not_apply_or_is_out_of_range_is_one_line_and_exit_2(narrow_run, method, flags, message, capsys):
    argv = ["attribute", "--run", str(narrow_run), "--method", method, *flags]
    try:
        code = main(argv)  # in process: these fail before any work, and a fresh interpreter per case costs seconds
    except SystemExit as exit:  # argparse's own errors
        code = exit.code
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and len(err.splitlines()) <= 3, err
