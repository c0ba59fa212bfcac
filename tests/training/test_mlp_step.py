"""The MLP's hand-written step against autograd and torch.optim.SGD (the oracles): the same gradients for every
parameter, the same parameters after several steps."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from backend.training.architectures import BatchedMLP
from backend.training.mlp_step import MLPStep, bits

K, B, D, H, C = 3, 16, 20, 8, 5


def _problem(dtype=torch.float64):
    model = BatchedMLP(K, D, C, [torch.Generator().manual_seed(k) for k in range(K)], hidden=H).to(dtype)
    train_x = torch.randn(50, D, dtype=torch.float64).to(dtype)
    labels = torch.randint(0, C, (50,))
    idx = torch.stack([torch.randperm(50)[:B] for _ in range(K)])
    return model, train_x, labels, idx


def _with_ones(x: torch.Tensor) -> torch.Tensor:
    """The images as the step reads them (`TrainingData.mlp_inputs`): a constant-one last column."""
    return torch.cat([x, torch.ones_like(x[:, :1])], dim=1)


def _per_parameter(step: MLPStep, flat: torch.Tensor) -> list[torch.Tensor]:
    """A flat buffer laid out as the step's (w1 with b1 as its last row, then w2^T with b2 as its last column),
    split into w1, b1, w2, b2."""
    n1 = K * (D + 1) * H
    w1, v = flat[:n1].view(K, D + 1, H), flat[n1:].view(K, C, H + 1)
    return [w1[:, :D], w1[:, D:], v[:, :, :H].transpose(1, 2), v[:, :, H:].transpose(1, 2)]


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_hand_written_gradients_equal_autograds(smoothing):
    model, train_x, labels, idx = _problem()  # float64 throughout, so that only a wrong formula could differ
    loss = F.cross_entropy(model(train_x[idx]).transpose(1, 2), labels[idx], reduction="sum",
                           label_smoothing=smoothing) / B
    expected = torch.autograd.grad(loss, list(model.parameters()))

    step = MLPStep(model, B, "fp32", smoothing)
    grads = _per_parameter(step, step.grads(_with_ones(train_x), idx, labels[idx]))
    for g, e in zip(grads, expected):
        torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-12)
    assert (grads[0].abs() > 0).any() and (grads[1] != 0).any() and (grads[3] != 0).any()


def test_steps_equal_torch_optim_sgds():
    """Weight decay, Nesterov momentum (the first step's momentum the gradient itself) and a changing learning
    rate, five steps, written back into the model: as torch.optim.SGD on autograd's gradients."""
    model, train_x, labels, idx = _problem()
    oracle = BatchedMLP(K, D, C, [torch.Generator().manual_seed(k) for k in range(K)], hidden=H).double()
    opt = torch.optim.SGD(oracle.parameters(), lr=0.5, momentum=0.9, nesterov=True, weight_decay=0.01)
    step = MLPStep(model, B, "fp32", momentum=0.9, weight_decay=0.01)
    for s, lr in enumerate((0.5, 0.3, 0.2, 0.4, 0.1)):
        batch = idx.roll(s, dims=1)
        step.step(_with_ones(train_x), batch, labels[batch], lr)
        opt.param_groups[0]["lr"] = lr
        opt.zero_grad()
        (F.cross_entropy(oracle(train_x[batch]).transpose(1, 2), labels[batch], reduction="sum") / B).backward()
        opt.step()
    step.write_back()
    for p, e in zip(model.parameters(), oracle.parameters()):
        torch.testing.assert_close(p, e, rtol=1e-10, atol=1e-12)
    assert not torch.equal(model.w1, BatchedMLP(K, D, C, [torch.Generator().manual_seed(k) for k in range(K)],
                                                hidden=H).w1.double())  # it did train


def test_bf16_step_keeps_fp32_masters_and_refreshes_its_bf16_copies():
    model, train_x, labels, idx = _problem(torch.float32)
    step = MLPStep(model, B, "bf16", weight_decay=0.01)
    step.step(_with_ones(train_x).bfloat16(), idx, labels[idx], 0.1)
    assert step.flat.dtype == step.grad.dtype == step.momenta.dtype == torch.float32
    assert step.x.dtype == step.flat_low.dtype == torch.bfloat16
    torch.testing.assert_close(step.flat_low, step.flat.bfloat16(), rtol=0, atol=0)
    assert not torch.equal(step.write_back().w1, _problem(torch.float32)[0].w1)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32, torch.float64])
def test_relu_and_its_gradient_on_the_bits_equal_the_float_ops(dtype):
    special = torch.tensor([0.0, -0.0, float("inf"), -float("inf"), 1e-40, -1e-40, 3.0, -3.0], dtype=torch.float64)
    h = torch.cat([special, torch.randn(1000, dtype=torch.float64)]).to(dtype)
    grad = torch.randn(len(h), dtype=torch.float64).to(dtype)
    relu = h.clone()
    bits(relu).clamp_min_(0)
    assert torch.equal(bits(relu), bits(torch.relu(h)).clamp_min(0))  # the same values, -0.0 made +0.0
    assert torch.equal(relu, torch.relu(h))
    expected = torch.ops.aten.threshold_backward(grad, torch.relu(h), 0)
    got = grad.clone()
    torch.ops.aten.threshold_backward.grad_input(bits(got), bits(relu), 0, grad_input=bits(got))
    assert torch.equal(got, expected) and (got == 0).any() and (got != 0).any()
