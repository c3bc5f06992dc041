"""Data containers and the deterministic index arithmetic every data set shares.

Conventions: images are float32 in [0, 1] before standardisation, laid out NHWC with an explicit channel axis
(a grayscale 8×8 image has shape ``(8, 8, 1)``); labels are int32 class indices ``0 .. num_classes - 1``.
All randomness here is keyed by explicit seeds, so a split (or an epoch's batch order) is a pure function of its
arguments: the same config always gives the same train/val/test split, and a resumed run sees the same batches.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from jaxdl.data.views import Blocks, Rows, Split, Windows  # noqa: F401  (re-exported)
from jaxdl.errors import DataError

SeedLike = int | Sequence[int]

# Standard deviations below this are clamped up to it, so a constant channel cannot divide by ~0.
STD_FLOOR = 1e-3


@dataclass(frozen=True)
class Dataset:
    """Three splits of named arrays plus a spec of what they hold.

    The first nine fields keep their historical positions (``Dataset(name, train, val, test, num_classes,
    class_names, input_shape, mean, std)``); the rest are keywords whose defaults describe an image classification
    set.

    Attributes:
      num_classes: number of classes (classification), vocabulary size (text), None (regression, series).
      input_shape: per-example shape of the first input array.
      mean, std: statistics the first input was standardised with (training split only), None when raw.
      inputs: the batch names the model reads; targets: the names the loss reads.
      kind: ``classification | regression | series | text | seq2seq`` — a hint for which task fits.
      description: one sentence on where the data come from.
      info: anything else worth recording: ``split`` (the strategy), ``vocab`` (text), ``columns``,
        ``target_columns``, ``time_column``, ``normalization`` (per-array statistics), spans …
    """

    name: str
    train: Split
    val: Split
    test: Split
    num_classes: int | None
    class_names: tuple[str, ...]
    input_shape: tuple[int, ...]  # per example, e.g. (8, 8, 1)
    mean: np.ndarray | None  # per-channel training mean used to standardise (None: not standardised)
    std: np.ndarray | None
    inputs: tuple[str, ...] = ("image",)
    targets: tuple[str, ...] = ("label",)
    kind: str = "classification"
    description: str = ""
    info: dict = field(default_factory=dict)

    def describe(self) -> str:
        """One line: sizes, per-example shapes, what is predicted and how the data were split."""
        sizes = f"train {len(self.train)} / val {len(self.val)} / test {len(self.test)}"
        spec = self.train.example_spec()
        split = f"split {self.info.get('split', 'unspecified')}"
        first = self.inputs[0] if self.inputs and self.inputs[0] in spec else self.train.names[0]
        dtype = spec[first][1]
        norm = "standardised" if self.mean is not None else "raw"
        if self.kind == "text":
            tok = self.info.get("tokenizer")
            vocab = (f"{tok['kind']} vocabulary of {self.num_classes} tokens" if isinstance(tok, dict)
                     else f"vocabulary {self.num_classes} characters (id 0 = <unk>)")
            return f"{self.name}: {sizes} blocks of {self.input_shape[0]} tokens, {vocab}, {split}"
        if self.kind == "series":
            cols, tcols = self.info.get("columns", ()), self.info.get("target_columns", ())
            return (f"{self.name}: {sizes} windows, input {self.input_shape} {dtype} ({norm}; columns "
                    f"{', '.join(cols)}) -> next {self.info.get('horizon', '?')} step(s) of {', '.join(tcols)}, "
                    f"{split}")
        if self.kind == "classification":
            names = ", ".join(self.class_names[:4]) + (", …" if len(self.class_names) > 4 else "")
            if self.inputs == ("image",) and self.mean is None:
                norm = "raw [0, 1]"
            return (f"{self.name}: {sizes}, input {self.input_shape} {dtype} ({norm}), {self.num_classes} classes "
                    f"({names}), {split}")
        targets = ", ".join(f"{t} {spec[t][0]}" for t in self.targets if t in spec)
        return f"{self.name}: {sizes}, input {self.input_shape} {dtype} ({norm}), {self.kind} of {targets}, {split}"


# --------------------------------------------------------------------------------------------------------------------
# Splits
# --------------------------------------------------------------------------------------------------------------------


def _largest_remainder(total: int, weights: np.ndarray) -> np.ndarray:
    """Integer counts summing to ``total``, proportional to ``weights`` (which sum to 1); ties go to earlier parts."""
    quota = total * np.asarray(weights, dtype=np.float64)
    counts = np.floor(quota + 1e-9).astype(np.int64)
    counts = np.minimum(counts, total)
    short = total - int(counts.sum())
    if short > 0:
        order = sorted(range(len(quota)), key=lambda j: (-(quota[j] - counts[j]), j))
        for j in order[:short]:
            counts[j] += 1
    elif short < 0:  # only possible through the 1e-9 slack
        for j in np.argsort(-counts, kind="stable")[:-short]:
            counts[j] -= 1
    return counts


def _at_least_one(counts: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """Give every part with ``wanted`` True at least one element (taken from the largest part) when possible."""
    counts = counts.copy()
    if counts.sum() < wanted.sum():
        return counts
    for j in np.flatnonzero(wanted & (counts == 0)):
        donor = int(np.argmax(counts))
        if counts[donor] <= 1:
            break
        counts[donor] -= 1
        counts[j] += 1
    return counts


def _check_labels(y) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"labels must be a 1-D array, got shape {y.shape}")
    return y


def stratified_split(y, fractions: Sequence[float], seed: SeedLike) -> list[np.ndarray]:
    """Split the indices ``0 .. len(y) - 1`` into parts of the given fractions, class by class.

    Each class's indices are shuffled (keyed by ``seed``) and dealt to the parts in proportion to ``fractions``
    (largest-remainder rounding per class), so every part has the class mix of the whole; a class with at least
    as many examples as there are non-empty parts appears in every part. If ``fractions`` sum to less than 1, the
    remainder forms one extra, final part. The parts are disjoint, cover every index, are deterministic in
    ``(y, fractions, seed)``, and each part's indices are returned in shuffled (not class-sorted) order.

    >>> test, rest = stratified_split(labels, [0.15, 0.85], seed=0)
    """
    y = _check_labels(y)
    fr = np.asarray(list(fractions), dtype=np.float64)
    if fr.ndim != 1 or fr.size == 0:
        raise ValueError(f"fractions must be a non-empty sequence of numbers, got {fractions!r}")
    if not np.all(np.isfinite(fr)) or np.any(fr < 0):
        raise ValueError(f"fractions must be finite and non-negative, got {list(fr)}")
    total = float(fr.sum())
    if total > 1 + 1e-6:
        raise ValueError(f"fractions sum to {total:.6g} > 1: {list(fr)}")
    if total < 1 - 1e-6:
        fr = np.append(fr, 1.0 - total)
    fr = fr / fr.sum()

    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[] for _ in fr]
    wanted = fr > 0
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        counts = _at_least_one(_largest_remainder(len(idx), fr), wanted)
        for j, chunk in enumerate(np.split(idx, np.cumsum(counts)[:-1])):
            parts[j].append(chunk)
    out = []
    for chunks in parts:
        merged = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int64)
        out.append(rng.permutation(merged).astype(np.int64))
    return out


def stratified_subset(y, n: int, seed: SeedLike) -> np.ndarray:
    """Indices of exactly ``min(n, len(y))`` examples with (as nearly as possible) the class mix of ``y``.

    Every class is represented when ``n`` is at least the number of classes. Deterministic in ``(y, n, seed)``;
    the indices come back sorted, so the subset keeps the original order.
    """
    y = _check_labels(y)
    n = int(n)
    if n < 0:
        raise ValueError(f"subset size must be >= 0, got {n}")
    if n >= len(y):
        return np.arange(len(y), dtype=np.int64)
    classes, sizes = np.unique(y, return_counts=True)
    counts = _largest_remainder(n, sizes / sizes.sum())
    counts = np.minimum(_at_least_one(counts, np.ones(len(classes), dtype=bool)), sizes)
    # Capping at a class's size can only lose examples when rounding overshot a tiny class; top up elsewhere.
    while counts.sum() < n:
        room = sizes - counts
        counts[int(np.argmax(room))] += 1
    rng = np.random.default_rng(seed)
    chosen = [rng.permutation(np.flatnonzero(y == c))[:k] for c, k in zip(classes, counts)]
    return np.sort(np.concatenate(chosen)).astype(np.int64)


def epoch_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    """The order in which epoch ``epoch`` visits ``n`` examples: a permutation keyed by ``(seed, epoch)`` only,
    so resuming at any epoch reproduces exactly the batches an uninterrupted run would have seen."""
    if n < 0 or seed < 0 or epoch < 0:
        raise ValueError(f"epoch_permutation needs n, seed, epoch >= 0, got n={n}, seed={seed}, epoch={epoch}")
    return np.random.default_rng([int(seed), int(epoch)]).permutation(int(n))


def _round_half_up(x: float) -> int:
    return int(np.floor(x + 0.5 + 1e-9))


def chronological_split(n: int, val_fraction: float, test_fraction: float) -> tuple[slice, slice, slice]:
    """Contiguous train / validation / test spans of ``n`` time-ordered steps (or rows).

    The test span is the last ``round(test_fraction * n)`` steps, validation the ``round(val_fraction * rest)``
    steps before it (``val_fraction`` is a fraction of the pool left after the test span, as for the other
    strategies), and training everything before that — so nothing in training or validation comes after the test
    span. Each span gets at least one step.

    Returns:
      ``(train_slice, val_slice, test_slice)``, slices of ``range(n)``.
    """
    n = int(n)
    if n < 3:
        raise DataError(f"a chronological split needs at least 3 steps (train, val, test), got {n}")
    n_test = min(max(_round_half_up(test_fraction * n), 1), n - 2)
    n_val = min(max(_round_half_up(val_fraction * (n - n_test)), 1), n - n_test - 1)
    a, b = n - n_test - n_val, n - n_test
    return slice(0, a), slice(a, b), slice(b, n)


def random_split(n: int, val_fraction: float, test_fraction: float, seed: int) -> tuple[np.ndarray, ...]:
    """Shuffled ``(train, val, test)`` index arrays of ``range(n)`` keyed by ``seed`` (rows without classes).

    The test part is drawn first (keyed by ``[seed, 0]``), validation from the rest (``[seed, 1]``), so the test
    part does not depend on ``val_fraction``. Each part gets at least one index.
    """
    n = int(n)
    if n < 3:
        raise DataError(f"a random split needs at least 3 rows (train, val, test), got {n}")
    n_test = min(max(_round_half_up(test_fraction * n), 1), n - 2)
    perm = np.random.default_rng([int(seed), 0]).permutation(n)
    test, pool = perm[:n_test], perm[n_test:]
    n_val = min(max(_round_half_up(val_fraction * len(pool)), 1), len(pool) - 1)
    pool = pool[np.random.default_rng([int(seed), 1]).permutation(len(pool))]
    return pool[n_val:].astype(np.int64), pool[:n_val].astype(np.int64), test.astype(np.int64)


def evenly_spaced(n: int, k: int) -> np.ndarray:
    """``min(n, k)`` sorted, distinct indices spread evenly over ``range(n)`` (first and last included) — how
    ``train_limit`` / ``eval_limit`` thin ordered examples (windows, blocks) without a random draw."""
    n, k = int(n), int(k)
    if k >= n:
        return np.arange(n, dtype=np.int64)
    if k <= 1:
        return np.zeros(max(k, 0), dtype=np.int64)
    return np.round(np.linspace(0, n - 1, k)).astype(np.int64)  # spacing >= 1, so rounding keeps them distinct


# --------------------------------------------------------------------------------------------------------------------
# Standardisation
# --------------------------------------------------------------------------------------------------------------------


def standardize(train_x: np.ndarray, *others: np.ndarray, std_floor: float = STD_FLOOR):
    """Per-channel (last axis) standardisation with statistics computed on ``train_x`` only.

    Returns ``(mean, std, (train_x', *others'))``; ``mean`` and ``std`` are float32 arrays of shape ``(C,)``, and
    ``std`` is clamped to at least ``std_floor`` so a constant channel maps to 0 instead of dividing by zero.
    """
    train_x = np.asarray(train_x)
    if train_x.ndim < 2 or len(train_x) == 0:
        raise DataError(f"cannot standardise: training inputs have shape {train_x.shape}")
    axes = tuple(range(train_x.ndim - 1))
    mean = train_x.mean(axis=axes, dtype=np.float64)
    std = train_x.std(axis=axes, dtype=np.float64)
    mean = mean.astype(np.float32)
    std = np.maximum(std, std_floor).astype(np.float32)
    out = []
    for a in (train_x, *others):
        a = np.asarray(a)
        if a.shape[-1:] != mean.shape:
            raise DataError(f"cannot standardise: array has {a.shape[-1]} channels, training data {mean.shape[0]}")
        out.append(((a.astype(np.float32, copy=False) - mean) / std).astype(np.float32, copy=False))
    return mean, std, tuple(out)
