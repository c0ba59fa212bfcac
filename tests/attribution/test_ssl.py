"""The SimCLR encoder of ssl-esvm: NT-Xent against its formula, the augmentations, reproducible training."""
import numpy as np
import torch

from backend.attribution.ssl import SslConfig, augment, embed, nt_xent, random_crop, train_encoder


def nt_xent_direct(z1: np.ndarray, z2: np.ndarray, tau: float) -> float:
    """SimCLR eq. 1 written out: mean over the 2B anchors of −log(exp(s_ij/τ) / Σ_{k≠i} exp(s_ik/τ))."""
    z = np.concatenate([z1, z2]).astype(np.float64)
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    n, b = len(z), len(z1)
    losses = []
    for i in range(n):
        j = (i + b) % n
        den = sum(np.exp(z[i] @ z[k] / tau) for k in range(n) if k != i)
        losses.append(-np.log(np.exp(z[i] @ z[j] / tau) / den))
    return float(np.mean(losses))


def test_nt_xent_matches_the_formula():
    rng = np.random.default_rng(0)
    for b, d, tau in ((2, 3, 1.0), (7, 5, 0.3), (16, 8, 0.5)):
        z1, z2 = rng.normal(size=(b, d)), rng.normal(size=(b, d))
        got = nt_xent(torch.from_numpy(z1), torch.from_numpy(z2), tau).item()
        assert abs(got - nt_xent_direct(z1, z2, tau)) < 1e-9


def test_a_crop_of_the_padded_image_is_a_shift_of_at_most_pad_pixels():
    x = torch.rand(40, 3, 6, 5, dtype=torch.float64)
    out = random_crop(x, 1, torch.Generator().manual_seed(0))
    padded = np.pad(x.numpy(), ((0, 0), (0, 0), (1, 1), (1, 1)))
    offsets = set()
    for img, src in zip(out.numpy(), padded):
        match = [(dy, dx) for dy in range(3) for dx in range(3) if np.array_equal(img, src[:, dy:dy + 6, dx:dx + 5])]
        assert match, "a crop is not a shifted copy"
        offsets.add(match[0])
    assert len(offsets) > 4  # the offsets vary from image to image


def test_augmentations_keep_the_shape_and_differ_per_draw():
    gen = torch.Generator().manual_seed(1)
    small, colour = torch.rand(8, 1, 8, 8), torch.rand(8, 3, 32, 32)
    for x in (small, colour):
        a, b = augment(x, gen, 0.1), augment(x, gen, 0.1)
        assert a.shape == x.shape and not torch.equal(a, b)
    view = augment(colour, gen, 0.1)
    assert view.min() >= 0 and view.max() <= 1


def test_an_encoder_is_reproducible_from_its_seed():
    images = np.random.default_rng(0).integers(0, 256, size=(64, 8, 8, 1), dtype=np.uint8)
    cpu = torch.device("cpu")

    def embeddings(seed):
        model, loss = train_encoder(images, SslConfig(epochs=2, batch=32, seed=seed), cpu)
        assert np.isfinite(loss)
        return embed(model, images, cpu)
    first = embeddings(3)
    assert first.shape == (64, SslConfig.dim) and first.dtype == np.float32
    assert np.array_equal(first, embeddings(3)) and not np.array_equal(first, embeddings(4))
