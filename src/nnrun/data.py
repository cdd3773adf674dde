"""Datasets: the lecture's toy problems generated in code with a seed, or a user's CSV; splits and scaling.

Every generator returns raw features (N, F) float32, integer labels (N,), the feature names and the class names.
`load()` splits them into train / val / test by fraction and standardises with the training split's mean and std.
"""

from __future__ import annotations

import csv
import io
import math
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import torch

from nnrun.config import ConfigError, DatasetConfig, UsageError


class DataError(UsageError):
    """A data file nnrun cannot use (missing, empty, non-numeric, ...); exit 2 like any bad input."""


@dataclass
class Split:
    x: torch.Tensor  # (N, F) float32, standardised
    y: torch.Tensor  # (N,) int64 class index

    def __len__(self) -> int:
        return self.x.shape[0]

    def to(self, device: torch.device) -> Split:
        return Split(self.x.to(device), self.y.to(device))


@dataclass
class Dataset:
    train: Split
    val: Split
    test: Split
    n_classes: int
    feature_names: list[str]
    class_names: list[str]
    mean: torch.Tensor  # (F,) training-split mean, applied to new inputs at predict time
    std: torch.Tensor   # (F,)

    @property
    def n_features(self) -> int:
        return self.train.x.shape[1]

    def to(self, device: torch.device) -> Dataset:
        """The data on `device`; a split that is the training split (fraction 0) stays it, evaluated once."""
        train = self.train.to(device)
        val, test = (train if split is self.train else split.to(device) for split in (self.val, self.test))
        return replace(self, train=train, val=val, test=test)


Generated = tuple[torch.Tensor, torch.Tensor, list[str], list[str]]


def polar(radius: torch.Tensor | float, angle: torch.Tensor) -> torch.Tensor:
    return torch.stack([radius * torch.cos(angle), radius * torch.sin(angle)], dim=1)


def xor(cfg: DatasetConfig, g: torch.Generator) -> Generated:
    corners = torch.tensor([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    which = torch.arange(cfg.n_samples) % 4
    x = corners[which]
    if cfg.n_samples > 4:  # noisy points around the corners; four are the truth table itself
        x = x + cfg.noise * torch.randn(cfg.n_samples, 2, generator=g)
    return x, torch.tensor([0, 1, 1, 0])[which], ["x1", "x2"], ["0", "1"]


def pass_fail(cfg: DatasetConfig, g: torch.Generator) -> Generated:
    # The hidden rule: lectures count a little more than project hours; 0.6 L + 0.4 H > 5 passes.
    # `noise` blurs the rule near the boundary (some diligent students fail, some lucky ones pass).
    lectures = torch.randint(0, 13, (cfg.n_samples,), generator=g).float()
    hours = 12.0 * torch.rand(cfg.n_samples, generator=g)
    score = 0.6 * lectures + 0.4 * hours + cfg.noise * torch.randn(cfg.n_samples, generator=g)
    return torch.stack([lectures, hours], dim=1), (score > 5.0).long(), ["lectures", "hours"], ["fail", "pass"]


def spirals(cfg: DatasetConfig, g: torch.Generator) -> Generated:
    k = cfg.classes
    sizes = [cfg.n_samples // k + (c < cfg.n_samples % k) for c in range(k)]  # the first arms take the remainder
    arms = []
    for c, size in enumerate(sizes):
        t = torch.linspace(0.0, 1.0, size + 1)[1:]  # skip the centre, where all arms meet
        # Each arm turns once around the centre as its radius t grows, rotated by 2 pi c / K from the previous one.
        arms.append(polar(t, 2 * math.pi * (t + c / k)) + cfg.noise * torch.randn(size, 2, generator=g))
    return torch.cat(arms), torch.arange(k).repeat_interleave(torch.tensor(sizes)), ["x1", "x2"], \
        [str(c) for c in range(k)]


def circles(cfg: DatasetConfig, g: torch.Generator) -> Generated:
    n_inner = cfg.n_samples // 2
    angle = 2 * math.pi * torch.rand(cfg.n_samples, generator=g)
    radius = torch.cat([0.5 * torch.rand(n_inner, generator=g),
                        0.8 + 0.2 * torch.rand(cfg.n_samples - n_inner, generator=g)])
    x = polar(radius, angle) + cfg.noise * torch.randn(cfg.n_samples, 2, generator=g)
    return x, (torch.arange(cfg.n_samples) < n_inner).long(), ["x1", "x2"], ["outer", "inner"]


def gaussians(cfg: DatasetConfig, g: torch.Generator) -> Generated:
    k = cfg.classes
    which = torch.arange(cfg.n_samples) % k
    x = polar(1.5, 2 * math.pi * which.float() / k) + cfg.noise * torch.randn(cfg.n_samples, 2, generator=g)
    return x, which, ["x1", "x2"], [str(c) for c in range(k)]


@dataclass
class Table:
    """A CSV file's header row (names stripped), its data rows with their line numbers, the separator read."""

    header: list[str]
    rows: list[tuple[int, list[str]]]
    separator: str

    @property
    def separator_name(self) -> str:
        return {"\t": "tab"}.get(self.separator, repr(self.separator))


def read_table(path: Path, named_as: str) -> Table:
    """A CSV file with a header row, as people have them: a UTF-8 byte-order mark (Excel's "CSV UTF-8") is not
    part of the first name, the separator (comma, semicolon, tab or bar) is sniffed, blank lines are skipped.
    `named_as` is how the user gave the path (e.g. 'dataset.path=x.csv'), for the error when it is missing."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"{named_as}: {'a directory, not a CSV file' if path.is_dir() else 'no such file'}")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset {exc.start}); "
                        "save it as CSV UTF-8") from None
    lines = io.StringIO(text, newline="").readlines()
    try:
        # Excel writes ';' where the decimal mark is a comma, a spreadsheet's copy is tab-separated. The first
        # lines are enough to tell; a file of one column has no separator to find (a comma then).
        separator = csv.Sniffer().sniff("".join(lines[:20]), delimiters=",;\t|").delimiter
    except csv.Error:
        separator = ","
    reader = csv.reader(lines, delimiter=separator)
    rows = [(reader.line_num, row) for row in reader if any(cell.strip() for cell in row)]
    if len(rows) < 2:
        raise DataError(f"{path}: empty; need a header row and at least one data row")
    return Table([name.strip() for name in rows[0][1]], rows[1:], separator)


def read_csv(cfg: DatasetConfig, g: torch.Generator) -> Generated:
    """Numeric feature columns and a target column of class labels, numbers (0/1, 3/5/7) or text ("setosa",
    "pass"): mapped to 0..K-1 in sorted order (`class_index`) and kept as the class names."""
    path = Path(cfg.path).expanduser()
    table = read_table(path, f"dataset.path={cfg.path}")
    header = table.header
    target = cfg.target if cfg.target is not None else header[-1]
    if target not in header:
        raise DataError(f"{path}: no target column {target!r}; columns are {', '.join(header)} "
                        f"(separated by {table.separator_name})")
    t = header.index(target)
    if len(header) < 2:
        raise DataError(f"{path}: no feature columns besides the target {target!r}: the header is one column; "
                        "columns are separated by ',', ';', tab or '|'")
    features, labels = [], []  # labels: (line, label)
    for line, row in table.rows:
        if len(row) != len(header):
            raise DataError(f"{path}: row {line} has {len(row)} cells, the header has {len(header)} "
                            f"(separated by {table.separator_name})")
        label = row[t].strip()
        if not label:
            raise DataError(f"{path}: row {line}, column {target!r}: empty label")
        labels.append((line, label))
        features.append([feature_value(path, line, name, cell, table.separator, target)
                         for i, (name, cell) in enumerate(zip(header, row)) if i != t])
    names, index = class_index([label for _, label in labels])
    for line, label in labels:
        if index[label] is None:
            raise DataError(f"{path}: row {line}, column {target!r}: {label} is not a finite number")
    if len(names) < 2:
        raise DataError(f"{path}: target column {target!r} has one class only ({names[0]}); need two or more")
    y = torch.tensor([index[label] for _, label in labels])
    return torch.tensor(features, dtype=torch.float32), y, [h for h in header if h != target], names


def feature_value(path: Path, line: int, name: str, cell: str, separator: str = ",",
                  target: str | None = None) -> float:
    """A feature cell as a number, or a DataError naming file, row and column (and what may be wrong)."""
    try:
        value = float(cell)
    except ValueError:
        hint = ""
        if separator != "," and re.fullmatch(r"\s*[-+]?\d*,\d+\s*", cell):
            hint = f"; it has a decimal comma, write {cell.strip().replace(',', '.')!r}"
        elif target is not None:
            hint = f"; feature columns hold numbers, only the target column ({target!r}) may hold text"
        raise DataError(f"{path}: row {line}, column {name!r}: {cell.strip()!r} is not a number{hint}") from None
    if not math.isfinite(value):
        raise DataError(f"{path}: row {line}, column {name!r}: {cell.strip()} is not a finite number")
    return value


def class_index(labels: list[str]) -> tuple[list[str], dict[str, int | None]]:
    """(class names in sorted order, label -> class index). When every label reads as a number they sort by
    value ("10" after "9"; "5" and "5.0" are one class, named "5"); otherwise they are text, sorted
    alphabetically. A non-finite number maps to None (the caller names its row)."""
    try:
        values = {label: float(label) for label in dict.fromkeys(labels)}
    except ValueError:
        names = sorted(set(labels))
        return names, {name: i for i, name in enumerate(names)}
    classes = sorted({v for v in values.values() if math.isfinite(v)})
    position = {v: i for i, v in enumerate(classes)}
    names = [f"{v:g}" if float(f"{v:g}") == v else repr(v) for v in classes]  # the shortest name that is v
    return names, {label: position.get(v) for label, v in values.items()}


GENERATORS: dict[str, Callable[[DatasetConfig, torch.Generator], Generated]] = {
    "xor": xor, "pass_fail": pass_fail, "spirals": spirals, "circles": circles, "gaussians": gaussians, "csv": read_csv,
}


def load(cfg: DatasetConfig) -> Dataset:
    """Generate (or read) the data, split it by fraction with `cfg.seed`, standardise from train."""
    g = torch.Generator().manual_seed(cfg.seed)
    x, y, feature_names, class_names = GENERATORS[cfg.name](cfg, g)
    x, n = x.float(), len(x)
    order = torch.randperm(n, generator=g)
    # A split asked for has a point at least; a fraction of 0 has none (see below).
    n_test, n_val = (max(1, round(n * f)) if f > 0 else 0 for f in (cfg.test_fraction, cfg.val_fraction))
    if n - n_val - n_test < 1:
        raise ConfigError("dataset.val_fraction", cfg.val_fraction,
                          f"fractions that leave training data (n={n}, test_fraction={cfg.test_fraction:g})")
    test_idx, val_idx, train_idx = order.split([n_test, n_val, n - n_test - n_val])
    mean = x[train_idx].mean(0)
    std = x[train_idx].std(0, unbiased=False).clamp_min(1e-8) if len(train_idx) > 1 else torch.ones(x.shape[1])
    xs = (x - mean) / std
    train = Split(xs[train_idx], y[train_idx])
    # A split of fraction 0 has nothing held out; it reports on the training points (the XOR truth table).
    val = Split(xs[val_idx], y[val_idx]) if n_val else train
    test = Split(xs[test_idx], y[test_idx]) if n_test else train
    return Dataset(train, val, test, len(class_names), feature_names, class_names, mean, std)
