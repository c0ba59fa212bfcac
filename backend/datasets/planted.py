"""Train-test leakage and label noise planted on purpose, with ground truth, to check that the explorer finds them.

Datamodels flag a test example whose prediction rests on one or two training examples; Ilyas
et al. (2022) quantify train-test leakage in CIFAR-10 that way, finding near-duplicate pairs.
Planting known near-duplicates gives a dataset where the right answer is known in advance.
"""
from __future__ import annotations

import numpy as np

from .base import Dataset, DatasetError

# One-pixel shifts: up, down, left, right.
SHIFTS = ((-1, 0), (1, 0), (0, -1), (0, 1))


def plant_leaks(ds: Dataset, n: int, noise: float, seed: int,
                shift: bool = True) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Replace ``n`` test images by perturbed copies of ``n`` distinct training images.

    Each copy gets Gaussian pixel noise of std ``noise * 255``, a one-pixel shift in a random
    direction (edges repeated; ``shift=False`` leaves it out, the rest of the draws unchanged) and a
    brightness offset of ``+-noise * 255``, and takes the label of its source. On 8x8 digits a
    one-pixel shift is an eighth of the image: it moves a copy farther from its source than most
    other training images of its class, in pixels and in a classifier's features alike.
    Returns ``(arrays, ground_truth)``: ``arrays`` are the keys of an ``npz:`` dataset (images,
    labels, split, class_names) plus the ground truth
    planted_test : int64 ndarray of shape (n,), positions in the test split
    planted_train : int64 ndarray of shape (n,), positions in the training split of each source
    which ``ground_truth`` holds too. Positions follow the order load_dataset("npz:...") gives.
    """
    if not 1 <= n <= min(ds.n_train, ds.n_test):
        raise DatasetError(
            f"cannot plant {n} leaks in {ds.n_train} train / {ds.n_test} test images: "
            f"choose 1 <= n <= {min(ds.n_train, ds.n_test)}"
        )
    if noise < 0:
        raise DatasetError(f"leak noise {noise} is negative: choose a noise level >= 0, e.g. 0.02")
    rng = np.random.default_rng(seed)
    planted_test = np.sort(rng.choice(ds.n_test, size=n, replace=False)).astype(np.int64)
    planted_train = rng.choice(ds.n_train, size=n, replace=False).astype(np.int64)
    test_images = ds.test_images.copy()
    test_labels = ds.test_labels.astype(np.int64, copy=True)
    for t, s in zip(planted_test, planted_train):
        test_images[t] = _perturb(ds.train_images[s], noise, rng, shift)
        test_labels[t] = ds.train_labels[s]
    ground_truth = {"planted_test": planted_test, "planted_train": planted_train}
    arrays = {
        "images": np.concatenate([ds.train_images, test_images]),
        "labels": np.concatenate([ds.train_labels.astype(np.int64), test_labels]),
        "split": np.array(["train"] * ds.n_train + ["test"] * ds.n_test),
        "class_names": np.array(ds.class_names, dtype=str),
        **ground_truth,
    }
    return arrays, ground_truth


def shifted(images: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """Images (n, H, W, C) translated: pixel (y, x) of the result is pixel (y + dy, x + dx) of the image,
    edges repeated past the border. The leak search (backend.leakage.candidates) undoes such shifts."""
    s = max(abs(dy), abs(dx))
    if s == 0:
        return np.asarray(images)
    h, w = images.shape[1:3]
    padded = np.pad(np.asarray(images), ((0, 0), (s, s), (s, s), (0, 0)), mode="edge")
    return padded[:, s + dy:s + dy + h, s + dx:s + dx + w]


def _perturb(image: np.ndarray, noise: float, rng: np.random.Generator, shift: bool) -> np.ndarray:
    """A near-duplicate of ``image`` (uint8 of shape (H, W, C)): shifted, brightened, noised."""
    direction = SHIFTS[rng.integers(len(SHIFTS))]  # drawn either way, so shift=False keeps the other draws
    moved = shifted(image[None], *(direction if shift else (0, 0)))[0].astype(np.float64)
    brightness = rng.choice((-1.0, 1.0)) * noise * 255
    noisy = moved + brightness + rng.normal(0.0, noise * 255, size=moved.shape)
    return np.clip(np.round(noisy), 0, 255).astype(np.uint8)


def plant_label_noise(ds: Dataset, fraction: float, seed: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Flip the labels of round(fraction · n_train) distinct training images, each to another class drawn uniformly.

    Mislabel detection ranks training images by an attribution method's self-score and asks how well the
    ranking finds these (dattri's noisy-label benchmark: the AUC against the flipped set).
    Returns ``(arrays, ground_truth)``: ``arrays`` are the keys of an ``npz:`` dataset plus the ground truth
    flipped_train : int64 ndarray of shape (n,), sorted positions in the training split whose label changed
    original_labels : int64 ndarray of shape (n,), their labels before the flip
    Test labels are left as they are, so test targets still ask about the true class.
    """
    n = int(round(fraction * ds.n_train))
    if not 0 < fraction < 1 or n < 1:
        raise DatasetError(f"label-noise fraction {fraction} flips {n} of {ds.n_train} training labels: "
                           "choose a fraction in (0, 1) that flips at least one, e.g. 0.05")
    if ds.n_classes < 2:
        raise DatasetError("a dataset of one class has no other label to flip to: use a dataset with 2 or more classes")
    rng = np.random.default_rng(seed)
    flipped = np.sort(rng.choice(ds.n_train, size=n, replace=False)).astype(np.int64)
    labels = ds.train_labels.astype(np.int64, copy=True)
    original = labels[flipped].copy()
    # An offset in 1..K-1 modulo K: uniform over the other classes, never the original one.
    labels[flipped] = (original + rng.integers(1, ds.n_classes, size=n)) % ds.n_classes
    ground_truth = {"flipped_train": flipped, "original_labels": original}
    arrays = {
        "images": np.concatenate([ds.train_images, ds.test_images]),
        "labels": np.concatenate([labels, ds.test_labels.astype(np.int64)]),
        "split": np.array(["train"] * ds.n_train + ["test"] * ds.n_test),
        "class_names": np.array(ds.class_names, dtype=str),
        **ground_truth,
    }
    return arrays, ground_truth


def npz_ground_truth(spec: str, fingerprint: str | None, keys: tuple[str, ...],
                     what: str) -> tuple[np.ndarray, ...] | str | None:
    """The int64 ground-truth arrays `keys` a planted npz dataset (`npz:PATH`) holds, for a run trained on it.

    None when the spec is no npz file or the file lacks the keys; a note saying why not when the file is gone,
    unreadable, or no longer the dataset the run was trained on (its `fingerprint`), so a rewritten npz never
    scores a run; `what` names what goes unmeasured in the note (e.g. "recall").
    """
    import zipfile
    from pathlib import Path

    from . import load_dataset
    from .base import dataset_fingerprint

    if not spec.startswith("npz:"):
        return None
    path = Path(spec[len("npz:"):])
    if not path.is_file():
        return f"dataset file {path} is gone: {what} not measured"
    try:
        with np.load(path, allow_pickle=False) as npz:
            if not set(keys) <= set(npz.files):
                return None
            truth = tuple(npz[key].astype(np.int64) for key in keys)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, AttributeError, TypeError) as exc:
        return f"dataset file {path} is unreadable ({type(exc).__name__}): {what} not measured"
    try:
        same = dataset_fingerprint(load_dataset(spec)) == fingerprint
    except DatasetError as exc:
        return f"dataset file {path} no longer loads ({exc}): {what} not measured"
    if not same:
        return f"dataset file {path} changed since the run was trained: {what} not measured"
    return truth
