"""New models trained with a run's own architecture and hyperparameters on chosen training sets.

Control models, counterfactuals and data-support searches all ask one question — what do models
trained on *this* set predict? — so they share this one path to the batched engine. The run is
self-contained: images.npy and labels.npy hold the data, so no dataset path or download is needed,
and the normalisation (from the training images) is the one the run's own models had.
"""
from __future__ import annotations

import numpy as np
import torch

from backend.datasets import Dataset
from backend.progress import Progress, part
from backend.store.manifest import run_precision
from backend.store.run_dir import Run
from backend.training.engine import TrainingData, default_batch_models, resolve_device, train_models, use_all_cores

def run_dataset(run: Run) -> Dataset:
    """The run's dataset, rebuilt from its own images.npy and labels.npy."""
    n = run.n_train
    images, labels = np.array(run.images), np.array(run.labels)
    return Dataset(name=run.manifest["dataset"].get("name", run.name), train_images=images[:n],
                   train_labels=labels[:n], test_images=images[n:], test_labels=labels[n:],
                   class_names=tuple(run.class_names))


def training_data(run: Run, device: str = "auto") -> TrainingData:
    """The run's data resident on `device` ('auto', 'cpu' or 'cuda'), set to train in the run's own precision
    (so every retrain repeats how the run's models were trained); reuse it across calls where you can."""
    dev = resolve_device(device)
    if dev.type == "cpu":
        use_all_cores()
    return TrainingData.from_dataset(run_dataset(run), dev, run_precision(run.manifest))


def train_sets(
    run: Run,
    data: TrainingData,
    subsets: np.ndarray,
    seeds: list[int],
    *,
    train_labels: np.ndarray | None = None,
    batch_models: int | None = None,
    progress: Progress | None = None,
    first_features: bool = False,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Train model k on training examples subsets[k] from seeds[k], in batches; return target margins.

    subsets : int64 ndarray of shape (K, n), every model the same n
    train_labels : optional int ndarray of shape (n_train,) replacing the run's training labels
    progress : progress(done, K, "model") (backend.progress), fractional while a batch trains
    first_features : also return the penultimate features of model 0 only, shape (n_targets, D): one
        model is the representation baseline, and K models' features would not fit at CIFAR scale
    Returns margins float32 of shape (K, n_targets), and the features or None.
    """
    arch, hparams = run.manifest["arch"], run.manifest["hparams"]
    K = len(subsets)
    step = batch_models or default_batch_models(arch, data.train_x.device)
    labels = None if train_labels is None else torch.as_tensor(np.asarray(train_labels, dtype=np.int64))
    margins = np.empty((K, run.n_targets), dtype=np.float32)
    features = None
    for start in range(0, K, step):
        end = min(start + step, K)
        report = part(progress, start, end - start, K)
        want = first_features and start == 0
        margins[start:end], feats = train_models(data, np.ascontiguousarray(subsets[start:end]), seeds[start:end],
                                                 arch, hparams, train_labels=labels, progress=report,
                                                 with_features=want)
        if want:
            features = feats[0].astype(np.float32)
    return margins, features
