"""The batched MLP's training step by hand: five batched GEMMs into buffers made once, no autograd.

Why: at the Fashion-MNIST shape (784 -> 128 -> 10, batch 256, K = 128, one thread, load 2) the autograd step
under bf16 autocast took 190 ms, of which its four large GEMMs were 70 ms. The rest was memory traffic
that nothing needs: every step allocated fresh 50 MB buffers (the minibatch gather, autocast's casts,
the bf16 gradients and their fp32 copies), and glibc hands blocks that large out as new pages, so each
was paid again in page faults (a gather into a fresh tensor 38 ms, into a kept one 8.5 ms). Here every
large tensor is allocated once per `train_models` call and written with `out=`.

Shapes (K models, batch B, D inputs, H hidden units, C classes):
    x  (K, B, D)   the minibatch, gathered straight into its buffer in the matmuls' dtype
    w1 (K, D, H), b1 (K, 1, H), w2 (K, H, C), b2 (K, 1, C): the fp32 master parameters of `BatchedMLP`

    z = x w1 + b1,  h = relu(z),  logits = h w2 + b2
    loss = sum over models of each model's mean cross-entropy against t = (1 - eps) onehot(y) + eps / C
    g = (softmax(logits) - t) / B                           (K, B, C), fp32
    dw2 = (g^T h)^T,  db2 = sum_b g,  dh = (g w2^T) * [h > 0],  dw1 = x^T dh,  db1 = sum_b dh

The images get no gradient (the first layer's input gradient, a GEMM as large as the forward, is never
formed). Under bf16 the GEMMs read bf16 copies of the weights, refreshed after each optimiser step from
the fp32 masters, and write bf16 products (fp32 accumulation inside oneDNN), as autocast would; softmax,
the loss gradient, the bias sums and the optimiser stay in fp32.
"""
from __future__ import annotations

import torch


class MLPStep:
    """Gradients of one step of K MLPs, written into the parameters' `.grad` for the engine's optimiser.

    model : `architectures.BatchedMLP`; batch : B; precision : "fp32" or "bf16"
    """

    def __init__(self, model: torch.nn.Module, batch: int, precision: str, label_smoothing: float = 0.0):
        self.params = (model.w1, model.b1, model.w2, model.b2)
        K, D, H = model.w1.shape
        C = model.w2.shape[2]
        self.eps, self.C = float(label_smoothing), C
        self.dtype = torch.bfloat16 if precision == "bf16" else model.w1.dtype
        low = self.dtype != model.w1.dtype
        dev = model.w1.device

        def buf(*shape):
            return torch.empty(shape, dtype=self.dtype, device=dev)

        for p in self.params:
            p.grad = torch.zeros_like(p)
        # The GEMMs' weights: bf16 copies kept beside the fp32 masters, or the masters themselves.
        self.weights = tuple(p.detach().to(self.dtype) if low else p.detach() for p in self.params)
        self.x, self.h, self.logits, self.dh = buf(K, batch, D), buf(K, batch, H), buf(K, batch, C), buf(K, batch, H)
        # fp32 GEMMs write dw1 in place; bf16 ones write bf16 products copied into the fp32 .grad.
        self.dw1 = buf(K, D, H) if low else model.w1.grad
        self.dw2t = buf(K, C, H)

    def grads(self, train_x: torch.Tensor, idx: torch.Tensor, labels: torch.Tensor) -> None:
        """Set every parameter's .grad for minibatch idx (K, B) of train_x (n_train, D) in the matmuls' dtype."""
        w1, b1, w2, b2 = self.weights
        x, h, dh = self.x, self.h, self.dh
        K, B, D = x.shape
        torch.index_select(train_x, 0, idx.reshape(-1), out=x.view(K * B, D))
        torch.baddbmm(b1, x, w1, out=h)
        h.relu_()
        torch.baddbmm(b2, h, w2, out=self.logits)
        master = self.params[0].dtype
        # The loss gradient with the classes on dim 1, g^T of shape (K, C, B): a softmax over a last dim of
        # ten classes is 12-27x slower on CPU than over dim 1 of the transposed logits.
        gt = torch.softmax(self.logits.transpose(1, 2).to(master), dim=1)
        gt.scatter_add_(1, labels.unsqueeze(1), torch.full_like(gt[:, :1], -(1.0 - self.eps)))
        gt.sub_(self.eps / self.C).div_(B)
        self.params[3].grad.copy_(gt.sum(2).unsqueeze(1))
        gt = gt.to(self.dtype)
        torch.bmm(gt, h, out=self.dw2t)  # dw2^T = g^T h: 5x faster in fp32 than h^T g (K, H, C)
        self.params[2].grad.copy_(self.dw2t.transpose(1, 2))
        g = gt.transpose(1, 2)
        torch.bmm(g, w2.transpose(1, 2), out=dh)
        # ReLU's gradient, zero where the unit was off, in place (masked_fill_ with a bool mask: 20-90x slower)
        torch.ops.aten.threshold_backward.grad_input(dh, h, 0, grad_input=dh)
        self.params[1].grad.copy_(dh.sum(1, keepdim=True, dtype=master))
        torch.bmm(x.transpose(1, 2), dh, out=self.dw1)
        if self.dw1 is not self.params[0].grad:
            self.params[0].grad.copy_(self.dw1)

    def refresh(self) -> None:
        """After the optimiser's step: copy the fp32 masters into the bf16 weights (no-op in fp32)."""
        for low, p in zip(self.weights, self.params):
            if low.data_ptr() != p.data_ptr():
                low.copy_(p.detach())
