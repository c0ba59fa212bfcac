"""The MLP's hand-written step against autograd (the oracle): the same gradients for every parameter."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from backend.training.architectures import BatchedMLP
from backend.training.mlp_step import MLPStep


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_hand_written_gradients_equal_autograds(smoothing):
    K, B, D, H, C = 3, 16, 20, 8, 5
    # float64 throughout, so that only a wrong formula could differ
    model = BatchedMLP(K, D, C, [torch.Generator().manual_seed(k) for k in range(K)], hidden=H).double()
    train_x = torch.randn(50, D, dtype=torch.float64)
    labels = torch.randint(0, C, (50,))
    idx = torch.stack([torch.randperm(50)[:B] for _ in range(K)])

    loss = F.cross_entropy(model(train_x[idx]).transpose(1, 2), labels[idx], reduction="sum",
                           label_smoothing=smoothing) / B
    expected = torch.autograd.grad(loss, list(model.parameters()))

    step = MLPStep(model, B, "fp32", smoothing)
    step.grads(train_x, idx, labels[idx])
    for p, e in zip(model.parameters(), expected):
        torch.testing.assert_close(p.grad, e, rtol=1e-10, atol=1e-12)
    assert (model.w1.grad.abs() > 0).any() and (model.b1.grad != 0).any()


def test_bf16_step_keeps_fp32_masters_and_refreshes_its_bf16_copies():
    K, B, D, H, C = 2, 8, 12, 6, 4
    model = BatchedMLP(K, D, C, [torch.Generator().manual_seed(k) for k in range(K)], hidden=H)
    step = MLPStep(model, B, "bf16")
    train_x = torch.randn(30, D).bfloat16()
    labels = torch.randint(0, C, (30,))
    idx = torch.stack([torch.randperm(30)[:B] for _ in range(K)])
    step.grads(train_x, idx, labels[idx])
    assert all(p.dtype == torch.float32 and p.grad.dtype == torch.float32 for p in model.parameters())
    with torch.no_grad():
        model.w1.sub_(model.w1.grad)
    step.refresh()
    torch.testing.assert_close(step.weights[0], model.w1.detach().bfloat16(), rtol=0, atol=0)
