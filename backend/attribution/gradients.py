"""What the gradient methods (trak, influence, tracin) share: trained models one by one, per-example gradients.

The engine trains K models as one batched module. A gradient method needs each model alone, as a pure
function of its parameters, so that `torch.func.vmap(grad(...))` gives one gradient per example in one
call. Every parameter and buffer of a batched module holds model k as the k-th of K equal chunks along
its first axis (stacked MLP weights, grouped-conv filters, per-model BatchNorm channels), so model k is
rebuilt as a K = 1 module from those chunks (`single_models`).

Output functions of one example's logits (n_classes,) and label y, as the methods use them:
  margin(z)      = logit_y - max_{c != y} logit_c         the run's margin, which every score attributes
  trak_output(z) = logit_y - logsumexp_{c != y} logit_c   = log(p / (1 - p)), TRAK's multiclass f (§3)
  loss(z)        = logsumexp_c logit_c - logit_y          cross-entropy, the training loss
"""
from __future__ import annotations

import numpy as np
import torch
from torch.func import functional_call, grad, vmap

from backend.progress import Progress, part
from backend.store.run_dir import Run
from backend.training import architectures
from backend.training.engine import TrainingData, default_batch_models, train_models
from backend.training.seeds import CONTROL_STREAM, PROJECTION_STREAM, stream_seed

# The parameters of each architecture's output layer (influence's `last` mode).
LAST_LAYER = {"mlp": ("w2", "b2"), "resnet9": ("fc",), "airbench": ("fc",)}


def _split(logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    # A mask instead of indexing by y keeps these functions vmap-able over examples.
    is_y = torch.arange(logits.shape[-1], device=logits.device) == y
    return (logits * is_y).sum(), logits.masked_fill(is_y, float("-inf"))


def margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    correct, others = _split(logits, y)
    return correct - others.amax()


def trak_output(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    correct, others = _split(logits, y)
    return correct - torch.logsumexp(others, 0)


def loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    correct, _ = _split(logits, y)
    return torch.logsumexp(logits, 0) - correct


def single_models(batched: torch.nn.Module, K: int, arch: str, data: TrainingData, hparams: dict) -> list[torch.nn.Module]:
    """The K models of a batched module as K separate K = 1 modules (copies, in eval mode)."""
    state = batched.state_dict()
    models = []
    for k in range(K):
        model = architectures.build(arch, 1, data.image_shape, data.n_classes, [torch.Generator()], hparams)
        model.load_state_dict({name: t.detach().chunk(K, 0)[k].clone() if t.dim() else t.clone()
                               for name, t in state.items()})
        models.append(model.to(data.train_x.device).eval())
    return models


def train_snapshots(run: Run, data: TrainingData, subsets: np.ndarray, seeds: list[int], epochs: list[int],
                    progress: Progress | None = None) -> list[list[tuple[float, torch.nn.Module]]]:
    """Train model k on subsets[k] from seeds[k] (the engine, as the run trains); keep it after each of `epochs`.

    Returns, per model, [(mean learning rate of that epoch, the model after it)] in the order of `epochs`.
    """
    arch, hparams = run.manifest["arch"], run.manifest["hparams"]
    K, step = len(subsets), default_batch_models(arch, data.train_x.device)
    kept: list[list[tuple[float, torch.nn.Module]]] = [[] for _ in range(K)]
    for start in range(0, K, step):
        end = min(start + step, K)

        def keep(epoch: int, model: torch.nn.Module, lr: float) -> None:
            if epoch in epochs:
                for k, single in enumerate(single_models(model, end - start, arch, data, hparams)):
                    kept[start + k].append((lr, single))

        train_models(data, np.ascontiguousarray(subsets[start:end]), seeds[start:end], arch, hparams,
                     progress=part(progress, start, end - start, K), on_epoch=keep)
    return kept


# Influence and TracIn work at the run's control model 0 (the full training set), trained again.
CONTROL_MODEL = {"kind": "control", "n_models": 1, "indices": [0], "seed_stream": CONTROL_STREAM, "trained": 1}


def control_snapshots(run: Run, data: TrainingData, epochs: list[int],
                      progress: Progress | None = None) -> list[tuple[float, torch.nn.Module]]:
    """Control model 0 after each of `epochs`, with each epoch's mean learning rate (train_snapshots)."""
    from backend.training.control import control_seeds

    everything = np.arange(run.n_train, dtype=np.int64)[None]
    [snapshots] = train_snapshots(run, data, everything, control_seeds(int(run.manifest["seed"]), 1), epochs,
                                  progress=progress)
    return snapshots


class Functional:
    """One K = 1 model as a function of (some of) its parameters, flattened in the order of `names`."""

    def __init__(self, model: torch.nn.Module, names: tuple[str, ...] | None = None):
        self.model = model
        self.params = {n: p.detach() for n, p in model.named_parameters()}
        self.buffers = {n: b.detach() for n, b in model.named_buffers()}
        self.names = tuple(names or self.params)
        self.shapes = [self.params[n].shape for n in self.names]
        self.n_params = sum(self.params[n].numel() for n in self.names)

    def variables(self) -> dict[str, torch.Tensor]:
        return {n: self.params[n] for n in self.names}

    def flat(self) -> torch.Tensor:
        """The chosen parameters as one vector of n_params."""
        return torch.cat([self.params[n].reshape(-1) for n in self.names])

    def unflatten(self, vector: torch.Tensor) -> dict[str, torch.Tensor]:
        out, start = {}, 0
        for n, shape in zip(self.names, self.shapes):
            size = int(np.prod(shape))
            out[n] = vector[start:start + size].reshape(shape)
            start += size
        return out

    def logits(self, variables: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """Logits (n_classes,) of one image x (C, H, W), or (B, n_classes) of a batch (B, C, H, W)."""
        single = x.dim() == 3
        out = functional_call(self.model, ({**self.params, **variables}, self.buffers),
                              (x[None, None] if single else x[None],))[0]
        return out[0] if single else out

    def per_example_grads(self, fn, x: torch.Tensor, y: torch.Tensor, chunk: int = 256):
        """Yield (start, grads) with grads float32 (len(chunk), n_params): ∇θ fn(logits(x_i), y_i) per example."""
        one = vmap(grad(lambda v, xi, yi: fn(self.logits(v, xi), yi)), in_dims=(None, 0, 0))
        variables = self.variables()
        for start in range(0, len(x), chunk):
            g = one(variables, x[start:start + chunk], y[start:start + chunk])
            yield start, torch.cat([g[n].reshape(len(g[n]), -1) for n in self.names], 1)

    def all_grads(self, fn, x: torch.Tensor, y: torch.Tensor, chunk: int = 256) -> torch.Tensor:
        """float32 (N, n_params): every example's gradient (small models only: N × n_params floats)."""
        return torch.cat([g for _, g in self.per_example_grads(fn, x, y, chunk)])


class Projector:
    """g ↦ g R / sqrt(dim), R of shape (n_params, dim) Gaussian or Rademacher (TRAK §3, step 2).

    R is drawn BLOCK rows at a time, block b from its own generator, so the same R comes out whether it is
    held (when it fits in `resident_bytes`) or redrawn block by block for every batch (full-width ResNet-9,
    6.6M parameters, where R would take 54 GB). Redrawing costs: ResNet-9 at width 0.125 (104k parameters)
    ran 7.3 projected gradients/s redrawn against 77/s for the gradients alone, so R is held up to 1 GiB.
    Model `index` of an ensemble draws its own R, as MadryLab's traker and dattri do (seed + 1e5 · model id):
    the ensemble then averages over projections as well as over models.
    """

    BLOCK = 8192

    def __init__(self, n_params: int, dim: int, kind: str, run_seed: int, device: torch.device,
                 resident_bytes: int = 1 << 30, index: int = 0):
        self.n_params, self.dim, self.kind, self.device = n_params, dim, kind, device
        self.seed = stream_seed(run_seed, index, PROJECTION_STREAM)
        self.blocks = range(0, n_params, self.BLOCK)
        self.resident = (torch.cat([self._block(b) for b in self.blocks])
                         if n_params * dim * 4 <= resident_bytes else None)

    def _block(self, start: int) -> torch.Tensor:
        rows = min(self.BLOCK, self.n_params - start)
        gen = torch.Generator().manual_seed((self.seed + start // self.BLOCK) % (1 << 63))
        if self.kind == "gaussian":
            block = torch.randn(rows, self.dim, generator=gen)
        else:
            block = torch.randint(0, 2, (rows, self.dim), generator=gen).float().mul_(2).sub_(1)
        return block.div_(self.dim ** 0.5).to(self.device)

    def __call__(self, g: torch.Tensor) -> torch.Tensor:
        """g (B, n_params) -> (B, dim)."""
        if self.resident is not None:
            return g @ self.resident
        out = torch.zeros(len(g), self.dim, device=g.device)
        for start in self.blocks:
            out += g[:, start:start + self.BLOCK] @ self._block(start)
        return out
