"""Target names: `train:i` and `test:j`, the one way targets are named in the CLI, URLs and the API.

`train:i` is column i of the margins, `test:j` is column n_train + j.
"""
from __future__ import annotations

import re

# ASCII digits only, and few enough that int() takes them (Python refuses over 4,300 digits): no run holds
# 10^18 images, and `test:²` or `test:٣` are not names.
_NAME = re.compile(r"(train|test):([0-9]{1,18})")
_RANGE = re.compile(r"(train|test):([0-9]{1,18})-([0-9]{1,18})")


class TargetError(ValueError):
    """A target name that is malformed or out of range."""


def target_column(name: str, n_train: int, n_test: int) -> int:
    """The margins column of a target name like 'test:42'."""
    match = _NAME.fullmatch(name.strip(" "))
    if not match:
        raise TargetError(f"bad target {_shown(name)}: write train:<i> or test:<j>, e.g. test:42")
    split, index = match.group(1), int(match.group(2))
    size = n_train if split == "train" else n_test
    if index >= size:
        raise TargetError(f"target {name} is out of range: the run has {size} {split} images (0..{size - 1})")
    return index if split == "train" else n_train + index


def _shown(name: str) -> str:
    """A bad name as an error quotes it: repr (a newline shows as \\n), cut short (a 5,000-digit URL parameter)."""
    return repr(name) if len(name) <= 60 else repr(name[:40]) + f"... ({len(name)} characters)"


def target_name(column: int, n_train: int) -> str:
    """The name of margins column `column`."""
    return split_name("train", column) if column < n_train else split_name("test", column - n_train)


def split_name(split: str, position: int) -> str:
    """The name of the image at `position` of a split ("test", 42 → "test:42"); no run is asked, so a vote in the
    shared annotation database is named even when it was cast on images this run lacks."""
    return f"{split}:{int(position)}"


def split_position(name: str) -> int:
    """The position within its split that a name gives ("test:42" → 42); TargetError when it is malformed."""
    match = _NAME.fullmatch(name.strip(" "))
    if not match:
        raise TargetError(f"bad target {_shown(name)}: write train:<i> or test:<j>, e.g. test:42")
    return int(match.group(2))


def parse_targets(spec: str, n_train: int, n_test: int) -> list[int]:
    """Columns for a comma-separated list of names and inclusive ranges, e.g. 'test:0-99,train:5'."""
    columns: list[int] = []
    for part in filter(None, (p.strip(" ") for p in spec.split(","))):
        match = _RANGE.fullmatch(part)
        if match:
            split, lo, hi = match.group(1), int(match.group(2)), int(match.group(3))
            if hi < lo:
                raise TargetError(f"bad target range {part!r}: the end must not be below the start")
            columns.extend(target_column(f"{split}:{i}", n_train, n_test) for i in (lo, hi))
            columns[-2:] = range(columns[-2], columns[-1] + 1)
        else:
            columns.append(target_column(part, n_train, n_test))
    if not columns:
        raise TargetError("no targets given: write e.g. test:0-99")
    return columns


def select_targets(spec: str, n_train: int, n_test: int) -> list[int]:
    """Sorted columns of `fit --targets`: "all", "train", "test", or a list of names and ranges (parse_targets)
    naming each target once."""
    spec = spec.strip()
    if spec in ("all", "train", "test"):
        lo, hi = {"all": (0, n_train + n_test), "train": (0, n_train), "test": (n_train, n_train + n_test)}[spec]
        return list(range(lo, hi))
    columns = parse_targets(spec, n_train, n_test)
    seen: set[int] = set()
    for column in columns:
        if column in seen:
            raise TargetError(f"target {target_name(column, n_train)} is listed twice in {spec!r}: name each target once")
        seen.add(column)
    return sorted(columns)


def describe_targets(columns, n_train: int, n_test: int) -> str:
    """The shortest spec select_targets reads back as `columns`: "all", "train", "test", or ranges like
    "train:0-4,test:7" (e.g. the --targets that fits a run's unfitted targets)."""
    columns = sorted(int(c) for c in columns)
    for spec in ("all", "train", "test"):
        if columns == select_targets(spec, n_train, n_test):
            return spec
    parts, start = [], 0
    for i in range(1, len(columns) + 1):
        if i == len(columns) or columns[i] != columns[i - 1] + 1 or columns[i] == n_train:
            lo, hi = target_name(columns[start], n_train), target_name(columns[i - 1], n_train)
            parts.append(lo if start == i - 1 else f"{lo}-{hi.split(':')[1]}")
            start = i
    return ",".join(parts)
