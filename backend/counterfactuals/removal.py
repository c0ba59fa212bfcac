"""Removal sets: which training images a counterfactual takes away, and which requests are refused.

The heuristics are the paper's §4.1.2 (Figure 8): the k training images with the most positive
datamodel weights for the target, the k most negative (backend.ranking's one top-k: a zero weight is never
removed, so a sparse datamodel may give fewer than k), k random images of the target's class, and k
random images from the whole set. Any user-chosen set of ids is a removal set too.
"""
from __future__ import annotations

import re

import numpy as np

from backend.ranking import bottom_k, top_k

HEURISTICS = ("top", "bottom", "random-class", "random")
MAX_REMOVE = 1280  # the paper's largest removal (App. F.3); smaller sets are capped at half the run


class RemovalError(ValueError):
    """A removal request that must not start training: the message names the problem and the fix."""


def default_max_remove(n_train: int) -> int:
    """The cap on a user's removal set: 1280 images, or half the training set if that is smaller."""
    return min(MAX_REMOVE, n_train // 2)


def validate_removal(ids, train_labels: np.ndarray, class_names: list[str], max_remove: int) -> np.ndarray:
    """Check a user's removal set and return it as sorted unique int64 training indices.

    train_labels : int ndarray of shape (n_train,)
    Refused (RemovalError): an empty set, an index outside 0..n_train-1, every training image, every
    image of one class (the models could not learn it, so the datamodel says nothing about that
    world), or more than `max_remove` images.
    """
    n_train = len(train_labels)
    ids = np.asarray(list(ids) if not isinstance(ids, np.ndarray) else ids)
    if ids.size == 0:
        raise RemovalError("the removal set is empty: add training images (click them, or add the top 10) first")
    if ids.dtype.kind not in "iu":
        raise RemovalError(f"removal ids must be integers, got {ids.dtype}: give training indices like 3,17,99")
    bad = ids[(ids < 0) | (ids >= n_train)]
    if bad.size:
        raise RemovalError(f"training index {int(bad[0])} is out of range: the run has {n_train} training images (0..{n_train - 1})")
    ids = np.unique(ids).astype(np.int64)
    if len(ids) == n_train:
        raise RemovalError(f"removing all {n_train} training images leaves nothing to train on: remove fewer")
    removed_per_class = np.bincount(train_labels[ids], minlength=len(class_names))
    per_class = np.bincount(train_labels, minlength=len(class_names))
    whole = np.flatnonzero((removed_per_class == per_class) & (per_class > 0))
    if whole.size:
        c = int(whole[0])
        raise RemovalError(f"the set removes every training image of class {class_names[c]!r} ({per_class[c]} images): "
                           "keep at least one, or the models cannot predict that class at all")
    if len(ids) > max_remove:
        raise RemovalError(f"the set has {len(ids)} images, more than this run's cap of {max_remove}: remove fewer")
    return ids



def format_ids(ids) -> str:
    """A removal set as a compact id list, in its order: each run of consecutive ids as a range ('3,10-14,7').

    The Counterfactuals page keeps its basket in the URL this way; parse_ids reads it back.
    """
    parts: list[str] = []
    ids = [int(i) for i in ids]
    start = 0
    for end in range(1, len(ids) + 1):
        if end == len(ids) or ids[end] != ids[end - 1] + 1:
            parts.append(str(ids[start]) if end - start == 1 else f"{ids[start]}-{ids[end - 1]}")
            start = end
    return ",".join(parts)


_INDEX = re.compile(r"[0-9]{1,18}")  # ASCII digits int() takes (not `²`, which isdigit() passes, nor 5,000 of them)


def parse_ids(text: str, n_train: int) -> list[int]:
    """The training indices of a format_ids list, in order, each once. A part that is not an index or an
    ascending range 'a-b', or an index outside 0..n_train-1, is a RemovalError naming it."""
    ids: list[int] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        lo, dash, hi = part.partition("-")
        if not (_INDEX.fullmatch(lo) and (_INDEX.fullmatch(hi) if dash else True)) or (dash and int(hi) < int(lo)):
            shown = repr(part) if len(part) <= 60 else repr(part[:40]) + f"... ({len(part)} characters)"
            raise RemovalError(f"bad removal id list part {shown}: write training indices and ascending ranges, "
                               "e.g. 3,10-14,7")
        last = int(hi) if dash else int(lo)
        if last >= n_train:
            raise RemovalError(f"training index {last} is out of range: the run has {n_train} training images "
                               f"(0..{n_train - 1})")
        ids.extend(range(int(lo), last + 1))
    return list(dict.fromkeys(ids))

def removal_set(heuristic: str, k: int, weights: np.ndarray, train_labels: np.ndarray, target_label: int,
                rng: np.random.Generator) -> np.ndarray:
    """k training indices chosen by one of HEURISTICS for a target with datamodel `weights` (n_train,)."""
    if heuristic == "top":
        return top_k(weights, k)
    if heuristic == "bottom":
        return bottom_k(weights, k)
    if heuristic == "random-class":
        pool = np.flatnonzero(train_labels == target_label)
        return np.sort(rng.choice(pool, size=min(k, len(pool)), replace=False)).astype(np.int64)
    if heuristic == "random":
        return np.sort(rng.choice(len(train_labels), size=k, replace=False)).astype(np.int64)
    raise RemovalError(f"unknown removal heuristic {heuristic!r}: use one of {', '.join(HEURISTICS)}")


def competitor_class(weights: np.ndarray, train_labels: np.ndarray, target_label: int, n_classes: int) -> int:
    """The wrong class a target is most confused with, read from its datamodel; used to mislabel its support.

    Runs store correct-class margins only, not logits, so the runner-up class is not on file. A negative
    weight w_t,i says training on image i lowers the target's margin, i.e. raises some competing logit;
    the wrong class whose training images carry the largest total negative weight is the one the model
    weighs against the target's own. Ties (e.g. an empty datamodel) go to the lowest class index.
    """
    pull = np.bincount(train_labels, weights=np.minimum(np.asarray(weights, dtype=np.float64), 0.0), minlength=n_classes)
    pull[target_label] = np.inf
    return int(np.argmin(pull))
