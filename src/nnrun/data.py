"""Datasets: the lecture's toy problems generated in code with a seed, or a user's CSV; splits and scaling.

Every generator returns raw features (N, F) float32 and integer labels (N,). `load()` splits them into
train / val / test by fraction and standardises with the training split's mean and std only.
"""

from __future__ import annotations

import csv
import io
import itertools
import math
import re
from dataclasses import dataclass
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

    def to(self, device: torch.device) -> "Split":
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

    def to(self, device: torch.device) -> "Dataset":
        """The data on `device`; a split that is another one (val or test of fraction 0 is the training split)
        stays that one, so it is evaluated once."""
        moved: dict[int, Split] = {}
        for split in (self.train, self.val, self.test):
            if id(split) not in moved:
                moved[id(split)] = split.to(device)
        return Dataset(moved[id(self.train)], moved[id(self.val)], moved[id(self.test)], self.n_classes,
                       self.feature_names, self.class_names, self.mean, self.std)

    def standardise(self, raw: torch.Tensor) -> torch.Tensor:
        return (raw - self.mean.to(raw.device)) / self.std.to(raw.device)


Generated = tuple[torch.Tensor, torch.Tensor, list[str], list[str]]


def xor(cfg: DatasetConfig, g: torch.Generator) -> Generated:
    corners = torch.tensor([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    labels = torch.tensor([0, 1, 1, 0])
    if cfg.n_samples == 4:
        x, y = corners, labels
    else:
        which = torch.arange(cfg.n_samples) % 4
        x = corners[which] + cfg.noise * torch.randn(cfg.n_samples, 2, generator=g)
        y = labels[which]
    return x, y, ["x1", "x2"], ["0", "1"]


def pass_fail(cfg: DatasetConfig, g: torch.Generator) -> Generated:
    # The hidden rule: lectures count a little more than project hours; 0.6 L + 0.4 H > 5 passes.
    # `noise` blurs the rule near the boundary (some diligent students fail, some lucky ones pass).
    lectures = torch.randint(0, 13, (cfg.n_samples,), generator=g).float()
    hours = 12.0 * torch.rand(cfg.n_samples, generator=g)
    score = 0.6 * lectures + 0.4 * hours + cfg.noise * torch.randn(cfg.n_samples, generator=g)
    x = torch.stack([lectures, hours], dim=1)
    return x, (score > 5.0).long(), ["lectures", "hours"], ["fail", "pass"]


def spirals(cfg: DatasetConfig, g: torch.Generator) -> Generated:
    k = cfg.classes
    per_class = cfg.n_samples // k
    t = torch.linspace(0.0, 1.0, per_class + 1)[1:]  # skip the centre, where all arms meet
    xs, ys = [], []
    for c in range(k):
        # Each arm turns once around the centre, rotated by 2 pi c / K from the previous one.
        theta = 2 * math.pi * (t + c / k) + 0.0
        radius = t
        arm = torch.stack([radius * torch.cos(theta), radius * torch.sin(theta)], dim=1)
        xs.append(arm + cfg.noise * torch.randn(per_class, 2, generator=g))
        ys.append(torch.full((per_class,), c))
    return torch.cat(xs), torch.cat(ys), ["x1", "x2"], [str(c) for c in range(k)]


def circles(cfg: DatasetConfig, g: torch.Generator) -> Generated:
    n_inner = cfg.n_samples // 2
    n_outer = cfg.n_samples - n_inner
    angle = 2 * math.pi * torch.rand(cfg.n_samples, generator=g)
    radius = torch.cat([0.5 * torch.rand(n_inner, generator=g), 0.8 + 0.2 * torch.rand(n_outer, generator=g)])
    x = torch.stack([radius * torch.cos(angle), radius * torch.sin(angle)], dim=1)
    x = x + cfg.noise * torch.randn(cfg.n_samples, 2, generator=g)
    y = torch.cat([torch.ones(n_inner), torch.zeros(n_outer)]).long()
    return x, y, ["x1", "x2"], ["outer", "inner"]


def gaussians(cfg: DatasetConfig, g: torch.Generator) -> Generated:
    k = cfg.classes
    which = torch.arange(cfg.n_samples) % k
    angle = 2 * math.pi * which.float() / k
    centres = 1.5 * torch.stack([torch.cos(angle), torch.sin(angle)], dim=1)
    x = centres + cfg.noise * torch.randn(cfg.n_samples, 2, generator=g)
    return x, which, ["x1", "x2"], [str(c) for c in range(k)]


# The separators a data file may use: Excel writes ';' where the decimal mark is a comma, and tab-separated text
# is what a spreadsheet's copy gives.
SEPARATORS = ",;\t|"


@dataclass
class Table:
    """A CSV file's header row (names stripped), its data rows with their line numbers in the file, and the
    separator they were read with."""

    header: list[str]
    rows: list[tuple[int, list[str]]]
    separator: str

    @property
    def separator_name(self) -> str:
        return {"\t": "tab"}.get(self.separator, repr(self.separator))


def read_table(path: Path, named_as: str) -> Table:
    """A CSV file with a header row, as people have them: a UTF-8 byte-order mark (Excel's "CSV UTF-8") is not
    part of the first name, and the separator (comma, semicolon, tab or bar) is found with `csv.Sniffer`; blank
    lines are skipped. `named_as` is how the user gave the path (e.g. 'dataset.path=x.csv'), for the error when
    it is missing."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"{named_as}: no such file")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset {exc.start}); "
                        "save it as CSV UTF-8") from None
    lines = io.StringIO(text, newline="")
    try:
        # The first lines are enough to tell; a file of one column has no separator to find (a comma then).
        separator = csv.Sniffer().sniff("".join(itertools.islice(lines, 20)), delimiters=SEPARATORS).delimiter
    except csv.Error:
        separator = ","
    lines.seek(0)
    reader = csv.reader(lines, delimiter=separator)
    rows = [(reader.line_num, row) for row in reader if any(cell.strip() for cell in row)]
    if len(rows) < 2:
        raise DataError(f"{path}: empty; need a header row and at least one data row")
    return Table([name.strip() for name in rows[0][1]], rows[1:], separator)


def read_csv(cfg: DatasetConfig, g: torch.Generator) -> Generated:
    """Numeric feature columns and a target column of class labels: numbers (0/1, 3/5/7) or text ("setosa",
    "pass"). Either way the labels are mapped to 0..K-1 in sorted order (by value for numbers, alphabetically
    for text) and kept as the class names."""
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
    features, labels, lines = [], [], []
    for line, row in table.rows:
        if len(row) != len(header):
            raise DataError(f"{path}: row {line} has {len(row)} cells, the header has {len(header)} "
                            f"(separated by {table.separator_name})")
        label = row[t].strip()
        if not label:
            raise DataError(f"{path}: row {line}, column {target!r}: empty label")
        labels.append(label)
        lines.append(line)
        features.append([feature_value(path, line, name, cell, table.separator, target)
                         for i, (name, cell) in enumerate(zip(header, row)) if i != t])
    names, index = class_index(labels)
    for line, label in zip(lines, labels):
        if index[label] is None:
            raise DataError(f"{path}: row {line}, column {target!r}: {label} is not a finite number")
    if len(names) < 2:
        raise DataError(f"{path}: target column {target!r} has one class only ({names[0]}); need two or more")
    y = torch.tensor([index[label] for label in labels])
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
    return [_number_name(v) for v in classes], {label: position.get(v) for label, v in values.items()}


def _number_name(value: float) -> str:
    short = f"{value:g}"
    return short if float(short) == value else repr(value)


GENERATORS: dict[str, Callable[[DatasetConfig, torch.Generator], Generated]] = {
    "xor": xor, "pass_fail": pass_fail, "spirals": spirals, "circles": circles, "gaussians": gaussians,
    "csv": read_csv,
}


def load(cfg: DatasetConfig) -> Dataset:
    """Generate (or read) the data, split it by fraction with `cfg.seed`, standardise from train."""
    g = torch.Generator().manual_seed(cfg.seed)
    x, y, feature_names, class_names = GENERATORS[cfg.name](cfg, g)
    x = x.float()
    n = x.shape[0]
    order = torch.randperm(n, generator=g)
    n_test = round(n * cfg.test_fraction)
    n_val = round(n * cfg.val_fraction)
    if n - n_val - n_test < 1:
        raise ConfigError("dataset.val_fraction", cfg.val_fraction,
                          f"fractions that leave training data (n={n}, test_fraction={cfg.test_fraction:g})")
    test_idx, val_idx, train_idx = order[:n_test], order[n_test:n_test + n_val], order[n_test + n_val:]
    mean = x[train_idx].mean(0)
    std = x[train_idx].std(0, unbiased=False).clamp_min(1e-8) if len(train_idx) > 1 else torch.ones(x.shape[1])
    xs = (x - mean) / std
    train = Split(xs[train_idx], y[train_idx])
    # A split of fraction 0 has nothing held out; it reports on the training points (the XOR truth table).
    val = Split(xs[val_idx], y[val_idx]) if n_val else train
    test = Split(xs[test_idx], y[test_idx]) if n_test else train
    return Dataset(train, val, test, len(class_names), feature_names, class_names, mean, std)
