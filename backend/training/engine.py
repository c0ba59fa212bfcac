"""The batched training engine: K models trained at once, then their margins on every target.

The K models share nothing but the arithmetic: each has its own subset, initialisation,
shuffling and augmentation drawn from its own seed (see `subsets.py`), its own parameters
and its own normalisation statistics. The loss is the sum of the K per-model mean losses, so
each model receives exactly the gradient it would get if trained alone.

Precision (`TrainingData.precision`): under bf16 the matmuls and convolutions run in bf16 over fp32 master
weights (autocast; the MLP's hand-written step in `mlp_step.py` keeps bf16 copies), with the loss and the
optimiser in fp32; margins are always evaluated in fp32.
"""
from __future__ import annotations

import contextlib
import functools
import glob
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from backend.progress import Progress, part
from backend.training import architectures
from backend.training.mlp_step import MLPStep, with_ones_column


def resolve_device(device: str) -> torch.device:
    """'auto' picks CUDA when present; 'cuda' without a GPU is an error the CLI reports."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for but no CUDA GPU is visible: use --device cpu or auto")
    if device not in ("cpu", "cuda"):
        raise ValueError(f"unknown device {device!r}: use auto, cpu or cuda")
    return torch.device(device)


PRECISIONS = ("fp32", "bf16")


def resolve_precision(precision: str, device: torch.device) -> str:
    """'auto' is bf16 where the device multiplies bf16 natively (CUDA with bf16; a CPU with AMX or AVX-512-bf16,
    where the bf16 GEMM ran about 2-4x the fp32 one), fp32 elsewhere (bf16 would be emulated there, and slower)."""
    if precision in PRECISIONS:
        return precision
    if precision != "auto":
        raise ValueError(f"unknown precision {precision!r}: use fp32, bf16 or auto")
    if device.type == "cuda":
        fast = torch.cuda.is_bf16_supported()
    else:
        fast = torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported()
    return "bf16" if fast else "fp32"


def usable_cores() -> int:
    """The cores this process may actually use (cgroup/affinity aware)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def use_all_cores(workers: int = 1) -> int:
    """Match torch's thread count to this process's share of the usable cores, `workers` processes sharing them."""
    n = max(1, usable_cores() // workers)
    torch.set_num_threads(n)
    return n


def cpu_workers(arch: str, n_models: int, n_chunks: int) -> int:
    """Training processes for a CPU run: one per core for a large MLP run, each on one thread; else 1 (this process,
    every core a torch thread). The MLP's GEMMs (64 x 65 x 128 for digits) are too small to split between threads:
    246 digits models took 4.3-4.8 CPU s as 2 processes of 1 thread, 5.3-5.4 as 1 process of 2 threads (load 16;
    the whole stage both ways: bench_training.py section 5). Under 1,000 models the workers' start (each imports
    torch, about 2 CPU s) is not worth it."""
    if arch != "mlp" or n_models < 1000 or n_chunks < 2:
        return 1
    return min(usable_cores(), n_chunks)


@dataclass
class TrainingData:
    """A dataset resident on the device, normalised once (airbench's 'data on the device').

    train_x   : float tensor of shape (n_train, C, H, W)
    train_y   : int64 tensor of shape (n_train,)
    targets_x : float tensor of shape (n_train + n_test, C, H, W), training images first
    targets_y : int64 tensor of shape (n_train + n_test,)
    precision : "fp32" or "bf16", the arithmetic of training's matmuls and convolutions (`resolve_precision`);
                a run's retrains build their data with the run's own
    """

    train_x: torch.Tensor
    train_y: torch.Tensor
    targets_x: torch.Tensor
    targets_y: torch.Tensor
    image_shape: tuple[int, int, int]
    n_classes: int
    precision: str = "fp32"

    @functools.cached_property
    def train_inputs(self) -> torch.Tensor:
        """train_x in the training matmuls' dtype, made once per dataset: under bf16 a minibatch gather moves
        half the bytes and no step casts its images."""
        return self.train_x.to(torch.bfloat16) if self.precision == "bf16" else self.train_x

    @functools.cached_property
    def mlp_inputs(self) -> torch.Tensor:
        """train_inputs flattened, with a constant-one last column: the MLP's first bias rides in its GEMM
        (`mlp_step.py`). Shape (n_train, C*H*W + 1)."""
        return with_ones_column(self.train_inputs.flatten(1))

    @classmethod
    def from_dataset(cls, ds, device: torch.device, precision: str = "fp32") -> "TrainingData":
        train = torch.from_numpy(ds.train_images).float().div_(255.0)
        mean = train.mean(dim=(0, 1, 2))
        std = train.std(dim=(0, 1, 2)).clamp_min(1e-3)

        def prep(images: np.ndarray) -> torch.Tensor:
            x = (torch.from_numpy(images).float().div_(255.0) - mean) / std
            return x.permute(0, 3, 1, 2).contiguous().to(device)

        return cls(
            train_x=prep(ds.train_images),
            train_y=torch.from_numpy(ds.train_labels).long().to(device),
            targets_x=prep(ds.target_images()),
            targets_y=torch.from_numpy(ds.target_labels()).long().to(device),
            image_shape=ds.image_shape,
            n_classes=ds.n_classes,
            precision=precision,
        )


def default_batch_models(arch: str, device: torch.device) -> int:
    """Models per batched call: the MLP is tiny; the CNN's activations and ResNet-9's memory limit theirs."""
    return {"mlp": 500, "cnn": 64 if device.type == "cuda" else 16}.get(arch, 16 if device.type == "cuda" else 2)


def _last_level_cache_bytes() -> int:
    """The largest CPU cache's size from sysfs; 32 MiB (this machine's L3) where sysfs does not say."""
    sizes = []
    for index in glob.glob("/sys/devices/system/cpu/cpu0/cache/index*/size"):
        text = Path(index).read_text().strip()
        if text[:-1].isdigit() and text[-1] in "KM":
            sizes.append(int(text[:-1]) << (10 if text[-1] == "K" else 20))
    return max(sizes, default=32 << 20)


def cache_group(arch: str, device: torch.device, in_features: int, n_classes: int, hparams: dict) -> int:
    """How many MLPs one step should batch on a CPU: as many as fit a quarter of the last-level cache.

    A model's step touches its fp32 weights, gradient and momentum, its bf16 weight and gradient copies (16 bytes
    a parameter) and its minibatch's activations. Once K models' working set spills the cache, every pass
    over them reads memory. The digits MLP's fastest steps (one thread, 32 MiB L3, best of 7) took 38 us per
    model-step at K = 32 and 143 at K = 500; its isolated ops, in CPU seconds, 35 us against 55. With the cache
    shared by a dozen other jobs (load 16) whole steps cost about the same CPU time, 53-66 us, from K = 32 to
    500: the groups gain on a quiet machine and cost nothing measurable on a busy one. The Fashion-shaped MLP (1.6 MB a model) ran the same from K = 4 to 128. Other
    architectures and CUDA train their whole batch at once (their activations, not their weights, dominate).
    """
    if arch != "mlp" or device.type != "cpu":
        return 1 << 62
    D, H, C, B = in_features, int(hparams["hidden"]), n_classes, int(hparams["batch_size"])
    per_model = 16 * (D * H + H + H * C + C) + B * (2 * D + 4 * H + 8 * C)
    return max(16, _last_level_cache_bytes() // 4 // per_model)


def triangular_lr(step: int, total: int, peak_frac: float) -> float:
    """Linear warm-up to 1 at peak_frac of training, then linear decay to 0 (the paper's cyclic LR)."""
    peak = max(1, int(round(peak_frac * total)))
    if step < peak:
        return (step + 1) / peak
    return max(0.0, (total - step) / max(1, total - peak))


def augment(x: torch.Tensor, seeds: torch.Tensor, step: int, pad: int = 4, cutout: int = 8) -> torch.Tensor:
    """Random crop (reflect-padded by `pad`), horizontal flip and cutout (none when cutout = 0), per image,
    drawn from each model's seed.

    x : tensor of shape (K, B, C, H, W); seeds : (K,) int64. Step s draws keys at counter -1 - s, apart
    from the epochs' shuffles (counters >= 0).
    """
    K, B, C, H, W = x.shape
    draws = (model_keys(seeds, -1 - step, B * 5) & (2**30 - 1)).reshape(K, B, 5)
    dy, dx = draws[..., 0] % (2 * pad + 1), draws[..., 1] % (2 * pad + 1)
    flip = draws[..., 2] % 2 == 1
    cy, cx = draws[..., 3] % H, draws[..., 4] % W
    padded = F.pad(x.reshape(K * B, C, H, W), (pad, pad, pad, pad), mode="reflect")
    rows = (dy.reshape(-1, 1) + torch.arange(H, device=x.device))  # (K*B, H)
    cols = (dx.reshape(-1, 1) + torch.arange(W, device=x.device))  # (K*B, W)
    cols = torch.where(flip.reshape(-1, 1), cols.flip(1), cols)
    n = torch.arange(K * B, device=x.device)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[n, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
    if cutout <= 0:
        return out.reshape(K, B, C, H, W)
    ys = torch.arange(H, device=x.device)
    xs = torch.arange(W, device=x.device)
    in_y = (ys[None, :] - cy.reshape(-1, 1)).abs() <= cutout // 2
    in_x = (xs[None, :] - cx.reshape(-1, 1)).abs() <= cutout // 2
    hole = in_y[:, :, None] & in_x[:, None, :]
    out = out.masked_fill(hole[:, None], 0.0)
    return out.reshape(K, B, C, H, W)


def margins_of(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Correct-class margin: correct logit minus the largest other logit.

    logits : (K, B, n_classes); labels : (B,). Returns (K, B). Reduced over the classes as dim 1 of the transposed
    view, (K, n_classes, B): contiguous for the MLP's head, and the fast layout for ten classes on a CPU.
    """
    per_class = logits.transpose(1, 2)
    at_label = labels.view(1, 1, -1).expand(logits.shape[0], 1, -1)
    correct = per_class.gather(1, at_label).squeeze(1)
    return correct - per_class.scatter(1, at_label, float("-inf")).amax(dim=1)


@torch.no_grad()
def evaluate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, chunk: int | None = None,
             with_features: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Margins (K, N) and predicted classes (K, N, int16) of all K models on every image of x; optionally
    penultimate features (K, N, D). The margin alone cannot tell which class wins when it is negative.

    chunk : images per pass; by default 256 on a CPU, where a group's activations then stay in cache (the digits
    MLP's margins pass, 40 models: 1.2 ms a model against 1.8-2.0 for 2048 images a pass, one thread, load 22;
    the small CNN, 8 models on 10,000 28x28 images: 0.19 CPU s a model against 0.47-0.53, load 13), and 2048 on
    CUDA."""
    model.eval()
    K = _n_models(model)
    chunk = chunk or (256 if x.device.type == "cpu" else 2048)
    margins, predictions, feats = [], [], []
    with strict_fp32(x.device):
        for start in range(0, len(x), chunk):
            xb = x[start:start + chunk]  # fp32 whatever the training precision: margins are the measurement
            f = (model.shared_features(xb) if hasattr(model, "shared_features")
                 else model.features(xb.unsqueeze(0).expand(K, -1, -1, -1, -1)))
            logits = model.head(f)
            margins.append(margins_of(logits.float(), y[start:start + chunk]))
            predictions.append(logits.float().transpose(1, 2).argmax(dim=1).to(torch.int16))
            if with_features:
                feats.append(f.float())
    return torch.cat(margins, 1), torch.cat(predictions, 1), (torch.cat(feats, 1) if with_features else None)


def _n_models(model: torch.nn.Module) -> int:
    return model.w1.shape[0] if hasattr(model, "w1") else model.K


@contextlib.contextmanager
def strict_fp32(device: torch.device, enabled: bool = True):
    """fp32 convolutions and matmuls that are really fp32 on CUDA: cuDNN runs fp32 convolutions as TF32 by default
    (10-bit mantissa), which would make fp32 training and the margins (always fp32) something else."""
    if device.type != "cuda" or not enabled:
        yield
        return
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def _autocast(device: torch.device, precision: str):
    # bf16 matmuls and convolutions over fp32 master weights; bf16 needs no loss scaling.
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


_MIX = (-0x40A7B892E31B1A47, -0x6B2FB644ECCEEE15)  # splitmix64's multipliers, as signed int64


def _mix64(x: torch.Tensor) -> torch.Tensor:
    """splitmix64's finaliser on int64 tensors (wrapping arithmetic; >> made logical by masking)."""
    for shift, mult in ((30, _MIX[0]), (27, _MIX[1])):
        x = (x ^ ((x >> shift) & ((1 << (64 - shift)) - 1))) * mult
    return x ^ ((x >> 31) & ((1 << 33) - 1))


def model_keys(seeds: torch.Tensor, counter: int, n: int) -> torch.Tensor:
    """Random int64 keys of shape (K, n): model k's hash (seeds[k], counter, position) only.

    Every model's randomness comes from its own seed in one batched op, so model k draws the same
    numbers whatever the other models of its batch (and K) are, with no per-model Python loop.
    """
    stream = _mix64(seeds.view(-1, 1) ^ _mix64(torch.full((1, 1), counter, dtype=torch.int64, device=seeds.device)))
    return _mix64(stream + torch.arange(n, dtype=torch.int64, device=seeds.device))


def epoch_orders(subsets: torch.Tensor, seeds: torch.Tensor, epoch: int) -> torch.Tensor:
    """Every model's shuffle of its own subset (K, n) for one epoch, as one argsort of its keys, shape (K, n).

    A model's keys are distinct (splitmix64's finaliser is a bijection, applied to distinct inputs), so every sort
    gives the same permutation: on a CPU numpy's, 2x torch's (digits, K = 41: 10.7 us a model against 21).
    """
    keys = model_keys(seeds, epoch, subsets.shape[1])
    if keys.device.type == "cpu":
        return subsets.gather(1, torch.from_numpy(np.argsort(keys.numpy(), axis=1)))
    return subsets.gather(1, keys.argsort(dim=1))


def train_models(
    data: TrainingData,
    subsets: np.ndarray,
    seeds: list[int],
    arch: str,
    hparams: dict,
    train_labels: torch.Tensor | None = None,
    progress: Progress | None = None,
    with_features: bool = False,
    with_predictions: bool = False,
    on_epoch: Callable[[int, torch.nn.Module, float], None] | None = None,
) -> tuple[np.ndarray, ...]:
    """Train K models, model k on training examples subsets[k] from seeds[k]; return their target margins.

    subsets : int64 ndarray of shape (K, n), every model the same n
    seeds   : K ints (see `subsets.model_seed`)
    train_labels : optional (n_train,) labels that replace the dataset's (for relabelling counterfactuals)
    progress : progress(done, K, "model") (backend.progress), fractional while the batch trains
    Returns (margins, features): margins float32 of shape (K, n_train + n_test), features (K, n_targets, D)
    if asked, else None; with_predictions appends each model's predicted class per target, int16 (K, n_targets).
    on_epoch : called after every epoch with (epoch, from 1; the batched model; the epoch's mean learning
        rate), for attribution methods that need the parameters along the way (TracIn's checkpoints)
    """
    device = data.train_x.device
    K, n = subsets.shape
    group = cache_group(arch, device, int(np.prod(data.image_shape)), data.n_classes, hparams)
    if K > group and on_epoch is None:
        # Cache-sized groups, one after another: each is its own batch, so every model's result is unchanged.
        parts = [train_models(data, subsets[a:a + group], seeds[a:a + group], arch, hparams, train_labels,
                              part(progress, a, min(group, K - a), K),
                              with_features, with_predictions)
                 for a in range(0, K, group)]
        return tuple(None if group_out[0] is None else np.concatenate(group_out) for group_out in zip(*parts))
    precision = data.precision
    generators = [torch.Generator().manual_seed(s) for s in seeds]
    model = architectures.build(arch, K, data.image_shape, data.n_classes, generators, hparams).to(device)
    if arch != "mlp":  # channels-last convolutions: 1.5x faster for the CNN on this CPU (bench_training.py)
        model = model.to(memory_format=torch.channels_last)
    subsets_t = torch.from_numpy(subsets).to(device)
    if hasattr(model, "init_whitening"):
        model.init_whitening(data.train_x, subsets_t)
    labels = data.train_y if train_labels is None else train_labels.to(device)
    batch, epochs = int(hparams["batch_size"]), int(hparams["epochs"])
    batch = min(batch, n)
    steps_per_epoch = n // batch
    total = steps_per_epoch * epochs
    lr, wd = float(hparams["lr"]), float(hparams["weight_decay"])
    momentum, peak = float(hparams["momentum"]), float(hparams["peak_epoch_frac"])
    seeds_t = torch.tensor(seeds, dtype=torch.int64, device=device)
    smoothing = float(hparams.get("label_smoothing", 0.0))
    if arch == "mlp" and not hparams.get("augment"):
        # The MLP's step by hand, biases inside the GEMMs and one fused update over flat buffers (mlp_step.py).
        mlp = MLPStep(model, batch, precision, smoothing, momentum, wd)
        train_x = data.mlp_inputs

        def train_step(idx: torch.Tensor, idx_labels: torch.Tensor, step: int, lr_factor: float) -> None:
            mlp.step(train_x, idx, idx_labels, lr * lr_factor)

        def trained() -> torch.nn.Module:
            return mlp.write_back()
    else:
        # One fused kernel updates every parameter (weight decay, Nesterov momentum, step) in a single pass:
        # 2.8 ms vs 9.0 (foreach) for the digits MLP at K = 500 (bench_training.py).
        fast = {id(p) for p in model.bias_params()} if hasattr(model, "bias_params") else set()
        scale = float(hparams.get("bias_lr_scale", 1.0))
        groups = [{"params": [p for p in model.parameters() if p.requires_grad and id(p) not in fast]}]
        if fast:  # airbench: BatchNorm biases at scale x the learning rate, the same decay per step (wd / scale)
            groups.append({"params": [p for p in model.parameters() if id(p) in fast], "lr": lr * scale,
                           "weight_decay": wd / scale})
        opt = torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=True, weight_decay=wd, fused=True)
        base_lrs = [g["lr"] for g in opt.param_groups]

        def train_step(idx: torch.Tensor, idx_labels: torch.Tensor, step: int, lr_factor: float) -> None:
            x = data.train_inputs[idx]  # (K, batch, C, H, W)
            if hparams.get("augment"):
                x = augment(x, seeds_t, step, pad=int(hparams.get("translate", 4)), cutout=int(hparams.get("cutout", 8)))
            with _autocast(device, precision):
                logits = model(x)
            # Sum over models of each model's mean loss: per-model gradients are unchanged by batching.
            # Classes on dim 1, (K, classes, batch): 4x faster on CPU than (K*batch, 10) rows of ten.
            loss = F.cross_entropy(logits.float().transpose(1, 2), idx_labels, reduction="sum",
                                   label_smoothing=smoothing) / batch
            opt.zero_grad(set_to_none=True)
            loss.backward()
            for g, base in zip(opt.param_groups, base_lrs):
                g["lr"] = base * lr_factor
            opt.step()

        def trained() -> torch.nn.Module:
            return model

    model.train()
    with strict_fp32(device, precision == "fp32"):
        step = 0
        for epoch in range(epochs):
            epoch_lr = 0.0
            # Each step's minibatches (K, batch) and their labels, contiguous: (steps, K, batch) made once an epoch
            order = epoch_orders(subsets_t, seeds_t, epoch)[:, :steps_per_epoch * batch]
            batches = order.reshape(K, steps_per_epoch, batch).transpose(0, 1).contiguous()
            batch_labels = labels[batches]
            for s in range(steps_per_epoch):
                lr_factor = triangular_lr(step, total, peak)  # the paper's cyclic schedule
                train_step(batches[s], batch_labels[s], step, lr_factor)
                epoch_lr += lr * lr_factor
                step += 1
                if progress is not None:
                    progress(K * step / total, K, "model")
            if on_epoch is not None:
                on_epoch(epoch + 1, trained(), epoch_lr / max(1, steps_per_epoch))
    model = trained()
    margins, predictions, feats = evaluate(model, data.targets_x, data.targets_y, with_features=with_features)
    out = margins.cpu().numpy().astype(np.float32), (feats.cpu().numpy() if with_features else None)
    return (*out, predictions.cpu().numpy()) if with_predictions else out
