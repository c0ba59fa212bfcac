"""Dataset loading: one spec string names a dataset, and every loader's output is validated once here.

    base        Dataset, DatasetError, the dataset fingerprint
    digits, cifar10, fashion_mnist, idx, npz, folder   one loader per spec (idx: MNIST's file format)
    validation  the one check every loader's output passes
    planted     datasets with planted train-test leaks (to measure the leak candidates)
    thumbnails  crisp enlargements of tiny images for display
"""
from __future__ import annotations

from pathlib import Path

from . import cifar10, digits, fashion_mnist, folder, idx, npz
from .base import Dataset, DatasetError, dataset_fingerprint
from .npz import write_npz_dataset
from .validation import validate

__all__ = ["Dataset", "DatasetError", "dataset_fingerprint", "dataset_spec_help", "load_dataset", "validate", "write_npz_dataset"]

SPECS = ("digits", "cifar10", "fashion-mnist", "idx:DIR", "npz:PATH", "folder:PATH")


def dataset_spec_help() -> str:
    """One paragraph for the CLI's --dataset help."""
    return (
        "digits (scikit-learn's 8x8 digits, built in); "
        "cifar10 (official binary release read from --data-dir, default data/cifar10; --download fetches it); "
        "fashion-mnist (the four official IDX files read from --data-dir, default /usr/share/datasets/fashion-mnist, "
        "Debian's dataset-fashion-mnist); "
        "idx:DIR (an MNIST-format dataset: DIR/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]); "
        "npz:PATH (a .npz with images, labels, split and optional class_names); "
        "folder:PATH (PATH/{train,test}/<class_name>/*.png|jpg|jpeg)"
    )


def load_dataset(spec: str, data_dir: str | Path | None = None, download: bool = False) -> Dataset:
    """Load the dataset named by ``spec`` (one of SPECS) and validate it.

    ``data_dir`` applies to cifar10 and fashion-mnist, ``download`` to cifar10; idx, npz and folder take
    their path in the spec.
    """
    kind, colon, path = spec.partition(":")
    if kind in ("idx", "npz", "folder") and colon and not path:
        raise DatasetError(f"dataset spec {spec!r} lacks a path: write {kind}:PATH, e.g. {kind}:data/mine")
    if spec == "digits":
        ds = digits.load()
    elif spec == "cifar10":
        ds = cifar10.load(data_dir, download)
    elif spec == "fashion-mnist":
        ds = fashion_mnist.load(data_dir)
    elif kind == "idx" and colon:
        ds = idx.load(path)
    elif kind == "npz" and colon:
        ds = npz.load(path)
    elif kind == "folder" and colon:
        ds = folder.load(path)
    else:
        raise DatasetError(f"unknown dataset {spec!r}: use one of {', '.join(SPECS)}")
    return validate(ds)
