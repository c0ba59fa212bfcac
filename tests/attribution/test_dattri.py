"""influence, tracin and trak against dattri (an independent implementation of all three) on a 310-parameter MLP."""
import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call
from torch.utils.data import DataLoader, TensorDataset

from backend.attribution.gradients import margin, trak_output
from backend.attribution.methods import make
from backend.store.run_dir import Run

dattri_task = pytest.importorskip("dattri.task")
N_TEST = 6


def _task(model, checkpoints, target):
    """dattri's task for a copy of one of our K = 1 modules (dattri loads every checkpoint into the module it
    is given): mean cross-entropy to train on, `target` to attribute."""
    model = copy.deepcopy(model)
    checkpoints = [{name: t.clone() for name, t in state.items()} for state in checkpoints]
    def batch(x, y):
        single = x.dim() == 3  # dattri vmaps its per-example gradients, and hands the Hessian a whole batch
        return (x[None], y[None]) if single else (x, y)

    def ce(params, data):
        x, y = batch(*data)
        return F.cross_entropy(functional_call(model, params, (x[None],))[0], y)

    def f(params, data):
        x, y = data
        return target(functional_call(model, params, (x[None, None],))[0, 0], y)

    return dattri_task.AttributionTask(loss_func=ce, model=model, checkpoints=checkpoints, target_func=f)


def _loaders(method, n_test=N_TEST):
    data, n = method.data, method.run.n_train
    train = DataLoader(TensorDataset(data.train_x, data.train_y), batch_size=n)
    test = DataLoader(TensorDataset(data.targets_x[n:n + n_test], data.targets_y[n:n + n_test]), batch_size=n_test)
    return train, test


def test_influence_equals_dattri_explicit_inverse_hessian(narrow_run):
    """The last layer, where the loss is convex and H positive definite, so an exact inverse is well defined
    (over all parameters a network's H is indefinite: CG stops at negative curvature, an inverse does not)."""
    from dattri.algorithm.influence_function import IFAttributorExplicit

    method = make("influence", Run(narrow_run), device="cpu", damping=0.01, influence_params="last")
    method.prepare()
    fn = method.fn
    attributor = IFAttributorExplicit(_task(fn.model, [fn.model.state_dict()], margin), layer_name=list(fn.names),
                                      regularization=method.config["weight_decay"] + method.config["damping"])
    train, test = _loaders(method)
    attributor.cache(train)
    ours = method.score(slice(0, N_TEST))
    theirs = attributor.attribute(train, test).detach().T.numpy()  # (n_test, n_train): ∇ℓ_iᵀ H⁻¹ ∇m(test), unsigned, unscaled
    expected = -theirs / method.run.n_train
    np.testing.assert_allclose(ours, expected, atol=2e-3 * np.abs(expected).max())


def test_tracin_equals_dattri_without_projection(narrow_run):
    from dattri.algorithm.tracin import TracInAttributor

    method = make("tracin", Run(narrow_run), device="cpu", checkpoints=3)
    method.prepare()
    ours = method.score(slice(0, N_TEST))
    lrs = torch.tensor([lr for lr, _ in method.checkpoints])
    states = [fn.model.state_dict() for _, fn in method.checkpoints]
    attributor = TracInAttributor(_task(method.checkpoints[0][1].model, states, margin), weight_list=lrs,
                                  normalized_grad=False)
    attributor.projector_kwargs = None  # dattri's switch for exact gradients (it projects to 512 by default)
    train, test = _loaders(method)
    theirs = attributor.attribute(train, test).detach().T.numpy()  # Σ_c η_c ∇ℓ_i · ∇m(test)
    np.testing.assert_allclose(ours, -theirs, rtol=1e-4, atol=1e-5 * np.abs(theirs).max())


class _DattrisProjection:
    """Our Projector's interface over dattri's CPU random projection, model `index` as dattri's ensemble id:
    with it both implementations featurise each model identically (dattri also divides by sqrt(n_params))."""

    def __init__(self, n_params, dim, kind, run_seed, device, index=0):
        from dattri.func.projection import random_project

        self.scale, self.index = n_params ** 0.5, index
        self.project = random_project(torch.zeros(1, n_params), 1, proj_dim=dim, proj_max_batch_size=32, proj_seed=0)

    def __call__(self, g):
        return self.project(g / self.scale, ensemble_id=self.index)


@pytest.mark.parametrize("models, damping", [(1, 0.1), (3, 0.0)])
def test_trak_equals_dattri_trak(narrow_run, monkeypatch, models, damping):
    """The same models, output function log(p/(1-p)), projections, d and λ: the same scores. This holds the
    kernel, the ridge's scale (ours is λ · tr(ΦᵀΦ)/d, dattri's absolute), the 1 - p reweighting and the
    ensemble average (the kernel terms and Q averaged separately) to the reference implementation."""
    from dattri.algorithm.trak import TRAKAttributor
    import backend.attribution.trak as trak

    dim = 32
    monkeypatch.setattr(trak, "Projector", _DattrisProjection)
    method = make("trak", Run(narrow_run), device="cpu", proj_dim=dim, models=models, damping=damping)
    method.prepare()
    fns = [fn for fn, _ in method.ensemble]
    model, data = fns[0].model, method.data
    phi = _DattrisProjection(fns[0].n_params, dim, "gaussian", 0, "cpu")(fns[0].all_grads(trak_output, data.train_x, data.train_y))
    regularization = damping * float((phi.double() ** 2).sum()) / dim  # λ' of the one model when damping > 0

    def correct_probability(params, data):
        x, y = data
        return F.softmax(functional_call(model, params, (x[None, None],))[0, 0], 0)[y]

    attributor = TRAKAttributor(_task(model, [fn.model.state_dict() for fn in fns], trak_output), correct_probability,
                                projector_kwargs={"proj_dim": dim, "proj_max_batch_size": 32, "proj_seed": 0},
                                regularization=regularization)
    attributor.grad_loss_func = attributor.grad_target_func  # TRAK featurises training images by f too
    train, test = _loaders(method)
    attributor.cache(train)
    ours = method.score(slice(0, N_TEST))
    theirs = attributor.attribute(test).detach().T.numpy()
    np.testing.assert_allclose(ours, theirs, rtol=1e-3, atol=1e-3 * np.abs(theirs).max())
