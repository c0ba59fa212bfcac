"""The batched MLP's training step by hand: five batched GEMMs and one fused SGD update over flat buffers.

Why: a digits step (64 -> 128 -> 10, batch 64) is about 2.6 MFLOP a model, so at K = 41 models its GEMMs
take under a millisecond and every other op's dispatch and pass over memory counts. The step therefore
keeps the op count minimal:
- each bias is an extra row of its weight matrix, multiplied by a constant-one input column (the images'
  `TrainingData.mlp_inputs`, and the hidden layer's last column), so the forward's bias adds and the
  backward's bias sums happen inside the GEMMs;
- all parameters of all K models live in one flat fp32 buffer (their gradients, momenta and bf16 copies in
  three more), so weight decay, Nesterov momentum and the step are one fused kernel for everything, and the
  bf16 copies one refresh copy (torch.optim.SGD's Python step cost more than the update itself here);
- every tensor is allocated once per `train_models` call and written with `out=` (at the Fashion shape a
  fresh 50 MB buffer per step costs its page faults again each step: a gather into a kept buffer 8.5 ms, into
  a fresh one 38 ms).

Shapes (K models, batch B, D inputs, H hidden units, C classes), with x~ = [x, 1] and h~ = [h, 1]:
    x~ (K, B, D+1)   the minibatch, gathered straight into its buffer in the matmuls' dtype
    w1 (K, D+1, H)   the first layer, its last row the bias b1
    v  (K, C, H+1)   the second layer transposed, its last column the bias b2

    h = relu(x~ w1),  logits^T = v h~^T                   (K, C, B)
    loss = sum over models of each model's mean cross-entropy against t = (1 - eps) onehot(y) + eps / C
    g^T = (softmax(logits) - t)^T / B                       (K, C, B), fp32
    dv = g^T h~,  dh = (g v[:, :, :H]) * [h > 0],  dw1 = x~^T dh

The images get no gradient (the first layer's input gradient, a GEMM as large as the forward, is never
formed). Under bf16 the GEMMs read bf16 copies of the weights, refreshed after each step from the fp32
masters, and write bf16 products (fp32 accumulation inside oneDNN), as autocast would; the biases, summed
inside the GEMMs, get bf16-rounded gradients like the weights. Softmax, the loss gradient, the momenta and
the masters stay in fp32.
"""
from __future__ import annotations

import torch


def with_ones_column(x: torch.Tensor) -> torch.Tensor:
    """Rows x (N, D) with a constant-one last column, (N, D+1): the inputs `MLPStep` reads, whose first bias
    rides in its GEMM as the weight matrix's last row."""
    return torch.cat([x, torch.ones_like(x[:, :1])], dim=1)


def bits(t: torch.Tensor) -> torch.Tensor:
    """A float tensor's bits as the signed integers of its width, for the ReLU and its gradient.

    IEEE floats order like sign-magnitude integers: a float is > 0 exactly when its bits, read as a signed
    integer, are > 0, and bits 0 are +0.0. So relu(h) is clamp_min(bits(h), 0) and ReLU's gradient
    threshold_backward on the bits, with the same results as on the floats (NaN aside), and 4x and 3x faster on bf16 (CPU
    kernels widen bf16 to fp32 and back; digits' h, K = 41, one thread: 0.34 us a model against 1.37, and
    0.57 against 1.67).
    """
    return t.view({torch.bfloat16: torch.int16, torch.float16: torch.int16, torch.float32: torch.int32,
                   torch.float64: torch.int64}[t.dtype])


class MLPStep:
    """K MLPs' parameters, momenta and step buffers; `step` trains them one minibatch on (SGD, Nesterov momentum).

    model : `architectures.BatchedMLP`, read at construction and written back by `write_back`
    batch : B; precision : "fp32" or "bf16"; momentum, weight_decay : torch.optim.SGD's
    """

    def __init__(self, model: torch.nn.Module, batch: int, precision: str, label_smoothing: float = 0.0,
                 momentum: float = 0.9, weight_decay: float = 0.0):
        self.model = model
        K, D, H = model.w1.shape
        C = model.w2.shape[2]
        self.eps, self.C, self.momentum, self.weight_decay = float(label_smoothing), C, float(momentum), float(weight_decay)
        master = model.w1.dtype
        self.dtype = torch.bfloat16 if precision == "bf16" else master
        dev = model.w1.device
        n1, n2 = K * (D + 1) * H, K * C * (H + 1)
        self.flat = torch.empty(n1 + n2, dtype=master, device=dev)
        self.w1, self.v = self.flat[:n1].view(K, D + 1, H), self.flat[n1:].view(K, C, H + 1)
        with torch.no_grad():
            self.w1[:, :D].copy_(model.w1)
            self.w1[:, D:].copy_(model.b1)
            self.v[:, :, :H].copy_(model.w2.transpose(1, 2))
            self.v[:, :, H:].copy_(model.b2.transpose(1, 2))
        self.momenta = torch.zeros_like(self.flat)
        self.steps = 0
        low = self.dtype != master
        # The GEMMs' operands and products: bf16 copies beside the fp32 masters, or the masters themselves.
        self.flat_low = self.flat.to(self.dtype) if low else self.flat
        self.grad_low = torch.empty_like(self.flat_low)
        self.grad = torch.empty_like(self.flat) if low else self.grad_low
        self.w1_low, self.v_low = self.flat_low[:n1].view(K, D + 1, H), self.flat_low[n1:].view(K, C, H + 1)
        self.dw1, self.dv = self.grad_low[:n1].view(K, D + 1, H), self.grad_low[n1:].view(K, C, H + 1)

        def buf(*shape):
            return torch.empty(shape, dtype=self.dtype, device=dev)

        self.x, self.h1, self.logits_t, self.dh = buf(K, batch, D + 1), buf(K, batch, H + 1), buf(K, C, batch), buf(K, batch, H)
        self.minus_target = torch.full((K, 1, batch), -(1.0 - self.eps), dtype=master, device=dev)
        self.h1[:, :, H] = 1.0  # h~'s constant column: relu keeps it 1, the GEMMs never write it
        self.h = self.h1[:, :, :H]
        self.h_bits, self.dh_bits = bits(self.h), bits(self.dh)

    def grads(self, train_x: torch.Tensor, idx: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The flat fp32 gradient of every parameter for minibatch idx (K, B) of train_x (n_train, D+1) in the
        matmuls' dtype, its last column ones (`TrainingData.mlp_inputs`). Returns `self.grad` (w1 then v)."""
        x, h, h1, dh = self.x, self.h, self.h1, self.dh
        K, B, D1 = x.shape
        H = h.shape[2]
        torch.index_select(train_x, 0, idx.reshape(-1), out=x.view(K * B, D1))
        torch.bmm(x, self.w1_low, out=h)
        self.h_bits.clamp_min_(0)  # relu
        # The logits and the loss gradient with the classes on dim 1, (K, C, B): a softmax over a last dim of ten
        # classes is 12-27x slower on CPU, and this product 1.15x faster than h~ v^T (digits, K = 41).
        torch.bmm(self.v_low, h1.transpose(1, 2), out=self.logits_t)
        gt = torch.softmax(self.logits_t, dim=1, dtype=self.flat.dtype)
        gt.scatter_add_(1, labels.unsqueeze(1), self.minus_target)
        if self.eps:
            gt.sub_(self.eps / self.C)
        gt.div_(B)
        gt = gt.to(self.dtype)
        torch.bmm(gt, h1, out=self.dv)  # dv = g^T h~: 5x faster in fp32 than h~^T g (K, H+1, C)
        torch.bmm(gt.transpose(1, 2), self.v_low[:, :, :H], out=dh)
        # ReLU's gradient, zero where the unit was off, on the bits (see `bits`)
        torch.ops.aten.threshold_backward.grad_input(self.dh_bits, self.h_bits, 0, grad_input=self.dh_bits)
        torch.bmm(x.transpose(1, 2), dh, out=self.dw1)
        if self.grad is not self.grad_low:
            self.grad.copy_(self.grad_low)
        return self.grad

    def step(self, train_x: torch.Tensor, idx: torch.Tensor, labels: torch.Tensor, lr: float) -> None:
        """One SGD step at learning rate lr on minibatch idx (K, B): torch.optim.SGD's update (weight decay,
        Nesterov momentum, the first step's momentum the gradient itself) as one fused kernel over all
        parameters, then the bf16 copies refreshed."""
        grad = self.grads(train_x, idx, labels)
        torch._fused_sgd_([self.flat], [grad], [self.momenta], weight_decay=self.weight_decay,
                          momentum=self.momentum, lr=lr, dampening=0.0, nesterov=True, maximize=False,
                          is_first_step=self.steps == 0)
        self.steps += 1
        if self.flat_low is not self.flat:
            self.flat_low.copy_(self.flat)

    @torch.no_grad()
    def write_back(self) -> torch.nn.Module:
        """Copy the masters into the model's w1, b1, w2, b2 (for its margins, or a checkpoint); returns it."""
        m, D, H = self.model, self.model.w1.shape[1], self.model.w1.shape[2]
        m.w1.copy_(self.w1[:, :D])
        m.b1.copy_(self.w1[:, D:])
        m.w2.copy_(self.v[:, :, :H].transpose(1, 2))
        m.b2.copy_(self.v[:, :, H:].transpose(1, 2))
        return m
