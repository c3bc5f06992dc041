"""Name → constructor lookup: one small registry type used for models, data sets, losses and optimizers."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from jaxdl.errors import RegistryError

T = TypeVar("T")


def closest(name: str, candidates, n: int = 3) -> list[str]:
    """The registered names most similar to ``name`` (for 'did you mean' messages)."""
    return difflib.get_close_matches(name, list(candidates), n=n, cutoff=0.5)


def unknown_message(kind: str, name: str, candidates) -> str:
    candidates = sorted(candidates)
    hint = closest(name, candidates)
    msg = f"unknown {kind} {name!r}"
    if hint:
        msg += f"; did you mean {' or '.join(repr(h) for h in hint)}?"
    return msg + f" Known {kind}s: {', '.join(candidates)}."


class Registry(Generic[T]):
    """A mapping from names to objects with a helpful error on a miss.

    >>> losses = Registry("loss")
    >>> @losses.register("mse")
    ... def mse(pred, target): ...
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str, obj: T | None = None):
        if obj is not None:
            self._add(name, obj)
            return obj

        def deco(o: T) -> T:
            self._add(name, o)
            return o

        return deco

    def _add(self, name: str, obj: T) -> None:
        if name in self._items:
            raise RegistryError(f"{self.kind} {name!r} is already registered")
        self._items[name] = obj

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise RegistryError(unknown_message(self.kind, name, self._items)) from None

    def __contains__(self, name: str) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))

    def names(self) -> list[str]:
        return sorted(self._items)

    def items(self) -> list[tuple[str, T]]:
        return sorted(self._items.items())


Constructor = Callable[..., object]
