"""Splits as named arrays: *storage* arrays plus a *view* saying how example ``i`` is cut from them.

Three views:

* :class:`Rows` — example ``i`` is row ``i`` of every array (images and labels, feature tables).
* :class:`Windows` — a series ``(T, F)``; example ``i`` is the ``inputs`` window of ``context`` steps starting at
  ``starts[i]`` and ``targets``, the next ``horizon`` steps of the target columns.
* :class:`Blocks` — a token stream ``(T,)``; example ``i`` is the ``tokens`` block of ``block_size + 1`` ids starting
  at ``starts[i]`` (consecutive blocks overlap by one id, so inputs ``tokens[:-1]`` and targets ``tokens[1:]`` are
  a shift of each other).

Windows and blocks are never materialised: storage is the series / stream plus an int32 ``starts`` array, and
:meth:`Split.gather` cuts a batch with indexing only, so the same function runs on numpy arrays on the host and on
jnp arrays inside ``jax.jit`` / ``lax.scan`` (put ``split.storage()`` on a device once, then gather per step).
"""

from __future__ import annotations

import numpy as np

from jaxdl.errors import DataError

Spec = dict[str, tuple[tuple[int, ...], np.dtype]]


class Rows:
    """Example ``i`` is row ``i`` of every array; the arrays share their leading axis."""

    def __init__(self, arrays: dict):
        if not arrays:
            raise DataError("a row split needs at least one named array")
        lengths = {k: len(a) for k, a in arrays.items()}
        if len(set(lengths.values())) > 1:
            names = list(lengths)
            if names == ["image", "label"]:  # the classic Split(x, y)
                raise DataError(f"split has {lengths['image']} inputs but {lengths['label']} labels")
            raise DataError("row split arrays have different lengths: "
                            + ", ".join(f"{k} {n}" for k, n in lengths.items()))
        self.arrays = dict(arrays)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.arrays)

    def __len__(self) -> int:
        return len(next(iter(self.arrays.values())))

    def storage(self) -> dict:
        return dict(self.arrays)

    def gather(self, storage: dict, idx) -> dict:
        return {k: storage[k][idx] for k in self.arrays}

    def example_spec(self) -> Spec:
        return {k: (tuple(int(d) for d in a.shape[1:]), np.dtype(a.dtype)) for k, a in self.arrays.items()}


class Windows:
    """Sliding windows over one series.

    Args:
      series: ``(T, F)`` float array, shared by every split of a data set.
      starts: ``(N,)`` first step of each example's input window.
      context: input steps per example.
      horizon: target steps per example (the ``horizon`` steps right after the input window).
      target_columns: column indices of ``series`` that form the targets.
      time: optional ``(T,)`` timestamps; ``Split.time`` is then the timestamp of each example's last target step.
    """

    names = ("inputs", "targets")

    def __init__(self, series: np.ndarray, starts: np.ndarray, context: int, horizon: int,
                 target_columns, time: np.ndarray | None = None):
        series = np.asarray(series)
        if series.ndim != 2:
            raise DataError(f"windows need a (T, F) series, got shape {series.shape}")
        self.series = series
        self.starts = np.asarray(starts, dtype=np.int32)
        self.context, self.horizon = int(context), int(horizon)
        self.target_columns = tuple(int(c) for c in target_columns)
        if not self.target_columns or not all(0 <= c < series.shape[1] for c in self.target_columns):
            raise DataError(f"target columns {self.target_columns} must index the series' {series.shape[1]} columns")
        span = self.context + self.horizon
        if len(self.starts) and (self.starts.min() < 0 or self.starts.max() + span > len(series)):
            raise DataError(f"a window of {span} steps starting at {int(self.starts.max())} overruns the series of "
                            f"{len(series)} steps")
        self.time = time

    def __len__(self) -> int:
        return len(self.starts)

    def storage(self) -> dict:
        return {"series": self.series, "starts": self.starts}

    def gather(self, storage: dict, idx) -> dict:
        s = storage["starts"][idx][..., None]  # (..., 1)
        series = storage["series"]
        inputs = series[s + np.arange(self.context, dtype=np.int32)]  # (..., C, F)
        targets = series[s + self.context + np.arange(self.horizon, dtype=np.int32)]  # (..., H, F)
        if self.target_columns != tuple(range(series.shape[1])):
            targets = targets[..., np.asarray(self.target_columns, dtype=np.int32)]  # (..., H, K)
        return {"inputs": inputs, "targets": targets}

    def example_spec(self) -> Spec:
        dt = np.dtype(self.series.dtype)
        return {"inputs": ((self.context, self.series.shape[1]), dt),
                "targets": ((self.horizon, len(self.target_columns)), dt)}

    def example_time(self) -> np.ndarray | None:
        if self.time is None:
            return None
        return np.asarray(self.time)[self.starts.astype(np.int64) + self.context + self.horizon - 1]


class Blocks:
    """Blocks of ``block_size + 1`` token ids cut from one int32 stream (shared by every split)."""

    names = ("tokens",)

    def __init__(self, tokens: np.ndarray, starts: np.ndarray, block_size: int):
        tokens = np.asarray(tokens)
        if tokens.ndim != 1:
            raise DataError(f"blocks need a 1-D token stream, got shape {tokens.shape}")
        self.tokens = tokens
        self.starts = np.asarray(starts, dtype=np.int32)
        self.block_size = int(block_size)
        if len(self.starts) and (self.starts.min() < 0 or self.starts.max() + self.block_size + 1 > len(tokens)):
            raise DataError(f"a block of {self.block_size + 1} tokens starting at {int(self.starts.max())} overruns "
                            f"the stream of {len(tokens)} tokens")

    def __len__(self) -> int:
        return len(self.starts)

    def storage(self) -> dict:
        return {"tokens": self.tokens, "starts": self.starts}

    def gather(self, storage: dict, idx) -> dict:
        s = storage["starts"][idx][..., None]  # (..., 1)
        return {"tokens": storage["tokens"][s + np.arange(self.block_size + 1, dtype=np.int32)]}  # (..., L + 1)

    def example_spec(self) -> Spec:
        return {"tokens": ((self.block_size + 1,), np.dtype(self.tokens.dtype))}


class Split:
    """One part of a data set: named arrays per example, cut on the fly by a view.

    ``Split(x, y)`` (the classic form) is a row split of ``{"image": x, "label": y}``. Other splits are built with
    :meth:`rows`, :meth:`windows` and :meth:`blocks`.

    * ``len(split)`` — number of examples; ``split.names`` — the batch's array names.
    * ``split.batch(idx)`` — host gather: ``idx`` of shape ``(B,)`` or ``(P, B)`` gives arrays of shape
      ``idx.shape + per-example shape``.
    * ``split.storage()`` / ``split.gather(storage, idx)`` — the same as a pure function of ``(storage, idx)``,
      usable under ``jax.jit`` with the storage on a device: ``batch(idx) == gather(storage(), idx)``.
    * ``split.example_spec()`` — ``{name: (per-example shape, dtype)}``.
    * ``split.x`` / ``split.y`` — the first input / first target array of a row split.
    * ``split.time`` — per-example timestamps (None when the data have none); host only, never in a batch.
    """

    def __init__(self, x=None, y=None, *, view=None, inputs: tuple[str, ...] | None = None,
                 targets: tuple[str, ...] | None = None, time: np.ndarray | None = None):
        if view is None:
            if x is None or y is None:
                raise DataError("Split(x, y) needs both inputs and labels (or view=...)")
            view = Rows({"image": x, "label": y})
            inputs, targets = ("image",), ("label",)
        self.view = view
        names = view.names
        self.inputs = tuple(inputs) if inputs is not None else names[:1]
        self.targets = tuple(targets) if targets is not None else (names[-1:] if len(names) > 1 else ())
        self._time = None if time is None else np.asarray(time)
        if self._time is not None and len(self._time) != len(view):
            raise DataError(f"split has {len(view)} examples but {len(self._time)} timestamps")

    @classmethod
    def rows(cls, arrays: dict, inputs: tuple[str, ...] | None = None, targets: tuple[str, ...] | None = None,
             time: np.ndarray | None = None) -> Split:
        """A row split of named arrays sharing their leading axis (else :class:`DataError` naming the lengths).

        Args:
          arrays: ``{name: (N, ...) array}``, in batch order.
          inputs, targets: the names ``split.x`` / ``split.y`` refer to (default: the first / the last array).
          time: optional ``(N,)`` per-row timestamps.
        """
        return cls(view=Rows(arrays), inputs=inputs, targets=targets, time=time)

    @classmethod
    def windows(cls, series, starts, context: int, horizon: int, target_columns, time=None) -> Split:
        """A window split of ``series`` (see :class:`Windows`); names ``("inputs", "targets")``."""
        view = Windows(series, starts, context, horizon, target_columns, time)
        return cls(view=view, inputs=("inputs",), targets=("targets",), time=view.example_time())

    @classmethod
    def blocks(cls, tokens, starts, block_size: int) -> Split:
        """A block split of the token stream ``tokens`` (see :class:`Blocks`); names ``("tokens",)``."""
        return cls(view=Blocks(tokens, starts, block_size), inputs=("tokens",), targets=("tokens",))

    def __len__(self) -> int:
        return len(self.view)

    def __repr__(self) -> str:
        spec = ", ".join(f"{k}: {s} {d}" for k, (s, d) in self.example_spec().items())
        return f"Split({type(self.view).__name__}, {len(self)} examples, {{{spec}}})"

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.view.names)

    @property
    def time(self) -> np.ndarray | None:
        return self._time

    def storage(self) -> dict:
        """The arrays to put on a device once (a pytree of arrays)."""
        return self.view.storage()

    def gather(self, storage: dict, idx) -> dict:
        """The batch for indices ``idx`` (``(B,)`` or ``(P, B)``), a pure function of ``(storage, idx)``.

        Works on numpy and on jax arrays (inside ``jit``): only indexing and arithmetic are used.
        """
        return self.view.gather(storage, idx)

    def batch(self, idx) -> dict:
        """Host gather: ``{name: idx.shape + per-example shape}`` numpy arrays."""
        return self.view.gather(self.view.storage(), np.asarray(idx))

    def example_spec(self) -> Spec:
        """``{name: (per-example shape, dtype)}`` of every array in a batch."""
        return self.view.example_spec()

    def _row(self, names: tuple[str, ...], what: str) -> np.ndarray:
        if not isinstance(self.view, Rows):
            raise DataError(f"split.{what} exists for row splits only; this is a {type(self.view).__name__} split: "
                            f"use split.batch(idx) (names {self.names})")
        if not names:
            raise DataError(f"split.{what}: this split has no {'input' if what == 'x' else 'target'} arrays")
        return self.view.arrays[names[0]]

    @property
    def x(self) -> np.ndarray:
        """The first input array of a row split (``image`` for image data sets)."""
        return self._row(self.inputs, "x")

    @property
    def y(self) -> np.ndarray:
        """The first target array of a row split (``label`` for image data sets)."""
        return self._row(self.targets, "y")
