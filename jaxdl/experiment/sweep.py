"""Sweep specifications: which points (sets of config overrides) an experiment runs.

A spec expands to a list of :class:`Point` s. Axes are dotted config keys (``optim.lr``), a config section whose
values are dicts (``model=[{"name": "mlp", "widths": (64,)}, {"name": "lenet5"}]``), or a free *label* whose values
are dicts of overrides (``reg=[{"label": "none"}, {"label": "l2", "optim.l2": 1e-3}]``) — labels name the choice in
reports.

>>> grid(**{"optim.lr": [1e-3, 1e-2], "seed": [0, 1, 2]})             # 6 points (product)
>>> zip_(**{"optim.lr": [1e-3, 1e-2], "optim.momentum": [0.9, 0.99]})  # 2 points (lockstep)
>>> random(8, rng_seed=0, **{"optim.lr": log_uniform(1e-4, 1e-1), "model.dropout": uniform(0, 0.5)})
>>> points([{"optim.lr": 1e-3}, {"optim.lr": 1e-2, "optim.name": "sgd"}])
>>> grid(...) * grid(...)   # product of two specs;   spec + spec   # one after the other
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import re
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from jaxdl.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Point:
    """One sweep point: dotted overrides, plus labels naming choices of label axes."""

    overrides: dict[str, Any]
    labels: dict[str, str] = dataclasses.field(default_factory=dict)
    # the values of plain (dotted-key) axes: what reports plot the metric against
    values: dict[str, Any] = dataclasses.field(default_factory=dict)

    def merge(self, other: Point) -> Point:
        clash = set(self.overrides) & set(other.overrides)
        if clash:
            raise ConfigError(f"sweep axes set the same key twice: {', '.join(sorted(clash))}")
        return Point({**self.overrides, **other.overrides}, {**self.labels, **other.labels},
                     {**self.values, **other.values})


def _is_label_axis(key: str) -> bool:
    return "." not in key and key not in ("seed", "name", "model", "data", "loss", "optim", "train")


def _axis_point(key: str, value: Any) -> Point:
    """The point contributed by choosing ``value`` on axis ``key``."""
    if isinstance(value, dict):
        value = dict(value)
        label = str(value.pop("label", None) or value.get("name") or _describe(value))
        if _is_label_axis(key):
            return Point(dict(value), {key: label})
        # a config section given as a dict: {"model": {"name": "mlp"}} -> model.name=mlp
        return Point({f"{key}.{k}": v for k, v in value.items()}, {key: label})
    if _is_label_axis(key):
        raise ConfigError(f"sweep axis {key!r} is not a config key; give its values as dicts of overrides "
                          f"(e.g. {key}=[{{'label': 'a', 'optim.l2': 1e-3}}]) or use a dotted key")
    return Point({key: value}, {}, {key: value})


def _describe(overrides: dict[str, Any]) -> str:
    return ",".join(f"{k}={v}" for k, v in overrides.items()) or "default"


class Spec:
    """A sweep specification: ``expand()`` gives its points."""

    def expand(self) -> list[Point]:
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self.expand())

    def __mul__(self, other: Spec) -> Spec:
        return Product(self, other)

    def __add__(self, other: Spec) -> Spec:
        return Concat(self, other)


@dataclasses.dataclass
class Grid(Spec):
    axes: dict[str, Sequence[Any]]

    def expand(self) -> list[Point]:
        for key, values in self.axes.items():
            if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
                raise ConfigError(f"sweep axis {key!r}: expected a list of values, got {values!r}")
        choices = [[_axis_point(k, v) for v in values] for k, values in self.axes.items()]
        out = []
        for combo in itertools.product(*choices):
            point = Point({})
            for c in combo:
                point = point.merge(c)
            out.append(point)
        return out


@dataclasses.dataclass
class Zip(Spec):
    axes: dict[str, Sequence[Any]]

    def expand(self) -> list[Point]:
        lengths = {k: len(v) for k, v in self.axes.items()}
        if len(set(lengths.values())) > 1:
            raise ConfigError(f"zip sweep axes need equal lengths, got {lengths}")
        out = []
        for values in zip(*self.axes.values()):
            point = Point({})
            for k, v in zip(self.axes, values):
                point = point.merge(_axis_point(k, v))
            out.append(point)
        return out


@dataclasses.dataclass(frozen=True)
class Distribution:
    kind: str  # log_uniform | uniform | choice | randint
    args: tuple

    def sample(self, rng: np.random.Generator) -> Any:
        if self.kind == "log_uniform":
            lo, hi = self.args
            return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))
        if self.kind == "uniform":
            return float(rng.uniform(*self.args))
        if self.kind == "randint":
            return int(rng.integers(self.args[0], self.args[1] + 1))
        value = self.args[rng.integers(len(self.args))]
        return value.item() if isinstance(value, np.generic) else value


def log_uniform(low: float, high: float) -> Distribution:
    if not 0 < low < high:
        raise ConfigError(f"log_uniform needs 0 < low < high, got ({low}, {high})")
    return Distribution("log_uniform", (low, high))


def uniform(low: float, high: float) -> Distribution:
    if not low < high:
        raise ConfigError(f"uniform needs low < high, got ({low}, {high})")
    return Distribution("uniform", (low, high))


def choice(*values: Any) -> Distribution:
    if not values:
        raise ConfigError("choice needs at least one value")
    return Distribution("choice", tuple(values))


def randint(low: int, high: int) -> Distribution:
    """An integer in [low, high] (both ends included)."""
    return Distribution("randint", (int(low), int(high)))


@dataclasses.dataclass
class Random(Spec):
    n: int
    dists: dict[str, Distribution]
    seed: int = 0

    def expand(self) -> list[Point]:
        rng = np.random.default_rng(self.seed)
        out = []
        for _ in range(self.n):
            point = Point({})
            for key, dist in self.dists.items():
                if not isinstance(dist, Distribution):
                    raise ConfigError(f"random sweep axis {key!r}: expected log_uniform/uniform/choice/randint, "
                                      f"got {dist!r}")
                point = point.merge(_axis_point(key, dist.sample(rng)))
            out.append(point)
        return out


@dataclasses.dataclass
class Points(Spec):
    items: list[dict[str, Any]]

    def expand(self) -> list[Point]:
        out = []
        for item in self.items:
            item = dict(item)
            labels = item.pop("labels", {}) or {}
            point = Point({})
            for k, v in item.items():
                point = point.merge(_axis_point(k, v) if isinstance(v, dict) else Point({k: v}, {}, {k: v}))
            out.append(Point(point.overrides, {**point.labels, **labels}, point.values))
        return out


@dataclasses.dataclass
class Product(Spec):
    left: Spec
    right: Spec

    def expand(self) -> list[Point]:
        return [a.merge(b) for a in self.left.expand() for b in self.right.expand()]


@dataclasses.dataclass
class Concat(Spec):
    left: Spec
    right: Spec

    def expand(self) -> list[Point]:
        return self.left.expand() + self.right.expand()


def grid(**axes: Sequence[Any]) -> Grid:
    return Grid(axes)


def zip_(**axes: Sequence[Any]) -> Zip:
    return Zip(axes)


def random(n: int, rng_seed: int = 0, **dists: Distribution) -> Random:
    """``n`` points drawn from ``dists`` with ``np.random.default_rng(rng_seed)`` (``seed`` may be an axis)."""
    return Random(n, dists, rng_seed)


def points(items: list[dict[str, Any]]) -> Points:
    return Points(list(items))


# --------------------------------------------------------------------------------------------------------------------
# Command-line sweeps: 'optim.lr=1e-3,3e-3 seed=0:4 model.widths=(64,32),(128,)'
# --------------------------------------------------------------------------------------------------------------------


_OPEN, _CLOSE = "([", ")]"


def _split_top(text: str, sep: str, where: str = "") -> list[str]:
    """Split on ``sep`` outside parentheses/brackets; ConfigError (naming ``where``) for unbalanced or mismatched
    brackets. Empty parts are kept (the caller rejects them)."""
    parts, stack, cur = [], [], []
    for ch in text:
        if ch in _OPEN:
            stack.append(ch)
        elif ch in _CLOSE:
            if not stack or _OPEN.index(stack.pop()) != _CLOSE.index(ch):
                raise ConfigError(f"--sweep item {where or text!r}: unbalanced {ch!r}")
        if ch == sep and not stack:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    if stack:
        raise ConfigError(f"--sweep item {where or text!r}: unbalanced parenthesis, {stack[-1]!r} is never closed")
    parts.append("".join(cur))
    return [p.strip() for p in parts]


_RANGE = re.compile(r"^(-?\d+):(-?\d+)$")
_RANGE_LIKE = re.compile(r"^-?\d*:-?\d*(:.*)?$")


def parse_sweep(text: str) -> Grid:
    """A grid from ``key=v1,v2 key2=a:b`` (``a:b`` is the integers a … b-1; ``(1,2)`` a tuple value).

    Malformed items fail with ConfigError naming the item: no ``=``, an empty key or value, an empty list item
    (``1e-3,,3e-3``, a trailing comma), unbalanced brackets, a range missing an end (``0:``), a key given twice.
    """
    axes: dict[str, list[Any]] = {}
    for item in text.split():
        if "=" not in item:
            raise ConfigError(f"--sweep item {item!r} is not of the form key=v1,v2 (or key=a:b)")
        key, values = item.split("=", 1)
        key, values = key.strip(), values.strip()
        if not key:
            raise ConfigError(f"--sweep item {item!r}: no key before '='")
        if key in axes:
            raise ConfigError(f"--sweep item {item!r}: {key} is swept twice")
        if not values:
            raise ConfigError(f"--sweep item {item!r}: no values after '='")
        m = _RANGE.match(values)
        if m:
            lo, hi = int(m.group(1)), int(m.group(2))
            if hi <= lo:
                raise ConfigError(f"--sweep {key}={values}: empty range (the end is excluded)")
            axes[key] = list(range(lo, hi))
            continue
        if _RANGE_LIKE.match(values):
            raise ConfigError(f"--sweep item {item!r}: a range needs both ends, a:b (the integers a … b-1)")
        parts = _split_top(values, ",", where=item)
        for i, v in enumerate(parts):
            if not v:
                where = "a trailing comma" if i == len(parts) - 1 else f"value {i + 1} is empty"
                raise ConfigError(f"--sweep item {item!r}: {where}")
        axes[key] = [v.strip("()[]") if v.startswith(("(", "[")) else v for v in parts]
    if not axes:
        raise ConfigError("--sweep: no axes given (expected e.g. 'optim.lr=1e-3,3e-3 seed=0:4')")
    return Grid(axes)


__all__ = ["Concat", "Distribution", "Grid", "Point", "Points", "Product", "Random", "Spec", "Zip", "choice", "grid",
           "log_uniform", "parse_sweep", "points", "randint", "random", "uniform", "zip_"]
