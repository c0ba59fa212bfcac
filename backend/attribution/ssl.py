"""A self-supervised image encoder (SimCLR; Chen et al. 2020) trained on a run's training images only.

SimCLR draws two augmented views of every image of a batch, embeds both, and pulls each pair together
against the other 2B − 2 views of the batch with the NT-Xent loss (eq. 1 of the paper): for the pair
(i, j), with s the cosine similarity of the projections and τ the temperature,

    ℓ(i, j) = −log( exp(s_ij / τ) / Σ_{k ≠ i} exp(s_ik / τ) ),

averaged over both orders of every pair. The representation kept is the backbone's output, before the
projection head (§4.2 of the paper: it transfers better than the head's output).

The augmentations suit the images: on small grey images (8x8 digits)
a shift of up to a pixel (a crop of the image padded by one) and Gaussian pixel noise, since a flip or a
colour change makes another digit or nothing; on colour images a horizontal flip, a crop of the image
padded by 4 and a colour jitter of brightness, contrast and saturation. They run batched on the
device (torch, no torchvision: it does not import beside the CPU torch build here), like the training
engine's. The backbone is an MLP for small images and a four-block conv net for larger ones.

Everything random (initialisation, shuffling, augmentation) comes from one seed of the SSL seed stream
(backend.training.seeds.SSL_STREAM), so an encoder is reproducible from its config.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from backend.progress import Progress

# Images of at most this side are "small" (8x8 digits): an MLP backbone and shift + noise augmentation.
SMALL_SIDE = 16


@dataclass(frozen=True)
class SslConfig:
    epochs: int = 100
    batch: int = 256
    temperature: float = 0.5
    dim: int = 128          # width of the representation (the backbone's output)
    lr: float = 1e-3
    noise: float = 0.1      # std of the Gaussian pixel noise of small images, pixels scaled to [0, 1]
    seed: int = 0

    def to_json(self) -> dict:
        return asdict(self)


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """The NT-Xent loss of B positive pairs (z1[i], z2[i]), each of shape (B, d); a scalar, mean over 2B anchors."""
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    sim = z @ z.T / temperature
    sim.fill_diagonal_(float("-inf"))  # k ≠ i: a view is not its own negative
    b = len(z1)
    partner = torch.cat([torch.arange(b, 2 * b), torch.arange(b)]).to(z.device)
    return F.cross_entropy(sim, partner)


def _backbone(shape: tuple, dim: int) -> nn.Module:
    h, w, c = shape
    if max(h, w) <= SMALL_SIDE:
        return nn.Sequential(nn.Flatten(), nn.Linear(h * w * c, 256), nn.BatchNorm1d(256), nn.ReLU(),
                             nn.Linear(256, dim))

    def block(cin, cout):
        return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
                             nn.MaxPool2d(2))
    return nn.Sequential(block(c, 32), block(32, 64), block(64, 128), block(128, dim),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten())


class Encoder(nn.Module):
    """Backbone (the representation) and a two-layer projection head (for the loss only)."""

    def __init__(self, shape: tuple, dim: int):
        super().__init__()
        self.backbone = _backbone(shape, dim)
        self.head = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, 64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


def random_crop(x: torch.Tensor, pad: int, gen: torch.Generator) -> torch.Tensor:
    """Each image of x (B, C, H, W) zero-padded by `pad` and cropped back to H x W at a random offset."""
    b, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=gen, device=x.device)
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=gen, device=x.device)
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]  # (B, 1, H, 1)
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]  # (B, 1, 1, W)
    batch = torch.arange(b, device=x.device)[:, None, None, None]
    chans = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
    return padded[batch, chans, rows, cols]


def augment(x: torch.Tensor, gen: torch.Generator, noise: float) -> torch.Tensor:
    """One random view of each image of x (B, C, H, W), pixels in [0, 1] (see the module docstring)."""
    b = len(x)
    if max(x.shape[2:]) <= SMALL_SIDE:
        x = random_crop(x, 1, gen)
        return x + noise * torch.randn(x.shape, generator=gen, device=x.device)
    flip = torch.rand(b, generator=gen, device=x.device) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(3), x)
    x = random_crop(x, 4, gen)

    def factor():
        return (0.6 + 0.8 * torch.rand(b, generator=gen, device=x.device))[:, None, None, None]
    x = x * factor()                                                    # brightness ±40 %
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * factor() + mean                                    # contrast ±40 %
    grey = x.mean(dim=1, keepdim=True)
    x = (x - grey) * factor() + grey                                    # saturation ±40 %
    return x.clamp(0.0, 1.0)


def _pixels(images: np.ndarray, device: torch.device) -> torch.Tensor:
    """uint8 (n, H, W, C) -> float (n, C, H, W) in [0, 1] on the device (a copy: the run's images are read-only maps)."""
    return torch.from_numpy(np.array(images, dtype=np.uint8)).to(device).permute(0, 3, 1, 2).float().div_(255.0)


def train_encoder(train_images: np.ndarray, config: SslConfig, device: torch.device,
                  progress: Progress | None = None) -> tuple[Encoder, float]:
    """A SimCLR encoder trained on train_images, uint8 (n_train, H, W, C); returns it (eval mode) and the last epoch's mean loss.

    progress counts epochs.
    """
    x = _pixels(train_images, device)
    gen = torch.Generator(device=device).manual_seed(config.seed)
    with torch.random.fork_rng(devices=[]):  # initialisation from the seed without touching the global stream
        torch.manual_seed(config.seed)
        model = Encoder(tuple(train_images.shape[1:]), config.dim).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    batch = min(config.batch, len(x))
    if progress:
        progress(0, config.epochs, "epoch")
    loss_mean = float("nan")
    model.train()
    for epoch in range(config.epochs):
        order = torch.randperm(len(x), generator=gen, device=device)
        total, steps = 0.0, 0
        for lo in range(0, len(x) - batch + 1, batch):  # full batches only: BatchNorm and the loss want B > 1
            views = x[order[lo:lo + batch]]
            loss = nt_xent(model(augment(views, gen, config.noise)), model(augment(views, gen, config.noise)),
                           config.temperature)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total, steps = total + loss.item(), steps + 1
        loss_mean = total / max(steps, 1)
        if progress:
            progress(epoch + 1, config.epochs, "epoch")
    return model.eval(), loss_mean


@torch.no_grad()
def embed(model: Encoder, images: np.ndarray, device: torch.device, batch: int = 4096) -> np.ndarray:
    """float32 (n, dim): the backbone's representation of uint8 images (n, H, W, C), no augmentation."""
    out = [model.backbone(_pixels(images[lo:lo + batch], device)).float().cpu().numpy()
           for lo in range(0, len(images), batch)]
    return np.concatenate(out).astype(np.float32)
