"""Crisp enlargements of tiny dataset images (8×8 digits, 32×32 CIFAR) for display."""
from __future__ import annotations

import numpy as np


def upscale(image: np.ndarray, size: int) -> np.ndarray:
    """Enlarge by the largest whole factor that keeps the longer side at most `size` (at least 1×).

    image : uint8 ndarray of shape (H, W, C) with C = 1 or 3
    Returns uint8 (H·f, W·f) for grey images, (H·f, W·f, 3) for colour. Each pixel becomes an f×f
    block (nearest-neighbour with a whole factor), so no pixel is blurred or drawn wider than another.
    """
    image = np.asarray(image)
    factor = max(1, size // max(image.shape[:2]))
    big = image.repeat(factor, axis=0).repeat(factor, axis=1)
    return big[..., 0] if big.shape[-1] == 1 else big
