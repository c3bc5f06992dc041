r"""Parallel corpora — pairs of a source and a target text — for sequence-to-sequence tasks, and ``bible_en_es``.

``bible_en_es``: the King James Bible (SWORD module ``engKJV2006eb``, Debian package ``sword-text-kjv``) aligned
verse by verse with the Spanish Reina-Valera 1909 (``spaRV1909eb``, ``sword-text-sparv``), read with ``pysword``
from ``/usr/share/sword`` (``data.root`` overrides). Both modules use the KJV versification, so verse ``k`` of one
is verse ``k`` of the other; a verse empty in either is skipped (18 are, all on the Spanish side). Text clean-up:
``pysword`` removes the OSIS markup (Strong's numbers, footnotes, titles); the KJV's paragraph sign ``¶``, stray
``\nd`` markers and the brackets of its supplied words are dropped, and whitespace is collapsed.

Splits are **whole books**, chosen once, a mix of narrative, prophecy, poetry and letters from both testaments:
validation :data:`BIBLE_VAL_BOOKS` (Ruth, Joel, Jonah, Galatians, James, 1 John: 568 verses), test
:data:`BIBLE_TEST_BOOKS` (Esther, Micah, Habakkuk, Ephesians, Philippians, 1 Peter: 692 verses), training every
other book (``data.val_fraction``/``test_fraction`` do not apply). A :class:`ParallelSource` without held-out groups
(``load(cfg, source=ParallelSource(...))``) is split at random by those fractions (``data.split_seed``).

Tokens: one shared vocabulary for both languages (``data.tokenizer``: ``bpe`` — byte-level BPE — or ``wordpiece``,
trained with :mod:`jaxdl.data.tokenize` on the source and target texts of the *training* pairs only, with
``data.vocab_size`` entries, cached on disk; or a ``tokenizer.json`` path). One vocabulary lets a T5 tie its
encoder and decoder embeddings and copy names across. The tokenizer needs a padding token with id 0 (the
decoder's start token) and an end-of-sequence token.

Named arrays per split (right-padded with 0): ``source`` ``(N, Ls)`` and ``target`` ``(N, Lt)`` int32 ids, each
ending with the end-of-sequence id, and ``source_mask``/``target_mask`` (1 for real tokens, EOS included). ``Ls``
and ``Lt`` are the longest sequences kept, at most ``data.max_source_len``/``data.max_target_len`` (EOS included).
A training pair longer than either limit is **dropped** (``info["dropped"]``); a held-out pair is **truncated**
instead (its last kept id becomes EOS; ``info["truncated"]``), so evaluation always covers every held-out verse
and BLEU compares against the untruncated references. ``data.train_limit``/``eval_limit`` keep that many evenly
spaced pairs. ``ds.info`` holds the tokenizer (``info["tokenizer"]``: kind, vocab_size, special ids, json path) and
the raw held-out texts (``info["text"][split]``: ``source``, ``target``, ``refs``) for BLEU and samples.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from jaxdl.data import tokenize
from jaxdl.data.arrays import register_source
from jaxdl.data.core import Dataset, Split, evenly_spaced, random_split
from jaxdl.errors import ConfigError, DataError

SWORD_ROOT = "/usr/share/sword"
SWORD_PACKAGES = "sword-text-kjv sword-text-sparv"
BIBLE_MODULES = {"en": "engKJV2006eb", "es": "spaRV1909eb"}
# held-out books (OSIS names), each a mix of Old and New Testament books and of genres
BIBLE_VAL_BOOKS = ("Ruth", "Joel", "Jonah", "Gal", "Jas", "1John")
BIBLE_TEST_BOOKS = ("Esth", "Mic", "Hab", "Eph", "Phil", "1Pet")
# bumped when the clean-up of verse texts changes (it is part of the disk cache key)
CLEAN_VERSION = 1
PARTS = ("train", "val", "test")
_SPACES = re.compile(r"\s+")


@dataclass(frozen=True, eq=False)
class ParallelSource:
    """Aligned text pairs before splitting.

    Attributes:
      source, target: the texts, pair ``i`` = ``(source[i], target[i])``.
      groups: a group per pair (the Bible's book), or None.
      refs: an identifier per pair (``"John 3:16"``), or None (then ``"#i"``).
      val_groups, test_groups: groups held out whole as validation and test; both empty: a random split.
      source_lang, target_lang: language codes, for descriptions.
    """

    source: tuple[str, ...]
    target: tuple[str, ...]
    groups: tuple[str, ...] | None = None
    refs: tuple[str, ...] | None = None
    val_groups: tuple[str, ...] = ()
    test_groups: tuple[str, ...] = ()
    name: str = "parallel"
    description: str = ""
    source_lang: str = "src"
    target_lang: str = "tgt"
    info: dict = field(default_factory=dict)

    def __post_init__(self):
        n = len(self.source)
        if len(self.target) != n:
            raise DataError(f"parallel corpus {self.name!r}: {n} source texts but {len(self.target)} target texts")
        for what in ("groups", "refs"):
            v = getattr(self, what)
            if v is not None and len(v) != n:
                raise DataError(f"parallel corpus {self.name!r}: {len(v)} {what} for {n} pairs")
        if (self.val_groups or self.test_groups) and self.groups is None:
            raise DataError(f"parallel corpus {self.name!r}: val_groups/test_groups need groups (one per pair)")


# --------------------------------------------------------------------------------------------------------------------
# SWORD modules
# --------------------------------------------------------------------------------------------------------------------


def clean_verse(text: str) -> str:
    """A verse as plain text: no paragraph sign, ``\\nd`` marker or supplied-word brackets; single spaces."""
    text = text.replace("¶", " ").replace("\\nd ", "").replace("[", "").replace("]", "")
    return _SPACES.sub(" ", text).strip()


def _sword_modules(root: str):
    try:
        from pysword.modules import SwordModules
    except ImportError:
        raise DataError("pysword not installed: bible_en_es reads SWORD modules with it (pip install pysword)"
                        ) from None
    if not Path(root, "mods.d").is_dir():
        raise DataError(f"SWORD modules not found under {root!r} (no mods.d/): install them with "
                        f"apt-get install {SWORD_PACKAGES} (or set data.root to a SWORD directory)")
    modules = SwordModules(root)
    found = modules.parse_modules()
    return modules, found


def _module_key(root: str, module: str, conf: dict) -> str:
    """Cache key of a module's verses: its conf, the sizes and times of its data files, the clean-up version."""
    h = hashlib.sha256(json.dumps({"module": module, "conf": conf, "clean": CLEAN_VERSION}, sort_keys=True,
                                  default=str).encode())
    data = Path(root, conf.get("datapath", ""))
    if data.is_dir():
        for p in sorted(data.iterdir()):
            st = p.stat()
            h.update(f"{p.name}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:24]


def _read_module(modules, root: str, module: str) -> tuple[list[str], list[str], list[str]]:
    """``(books, refs, texts)`` of every verse of ``module`` in canonical order (texts cleaned)."""
    bible = modules.get_bible_from_module(module)
    if hasattr(bible, "_decompressed_text"):
        # pysword decompresses a book's whole block for every verse; memoising the last blocks makes reading the
        # whole Bible take seconds instead of a minute (a private method: skipped if a release renames it)
        bible._decompressed_text = functools.lru_cache(maxsize=4)(bible._decompressed_text)
    books_of, refs, texts = [], [], []
    for testament in ("ot", "nt"):
        for book in bible.get_structure().get_books().get(testament, []):
            verses = list(bible.get_iter(books=[book.osis_name]))
            n = int(sum(book.chapter_lengths))
            if len(verses) != n:
                raise DataError(f"SWORD module {module!r}: book {book.osis_name} has {len(verses)} verses, its "
                                f"versification {n}; the module looks damaged (reinstall {SWORD_PACKAGES})")
            for c, length in enumerate(book.chapter_lengths, start=1):
                refs += [f"{book.osis_name} {c}:{v}" for v in range(1, length + 1)]
            books_of += [book.osis_name] * n
            texts += [clean_verse(v) for v in verses]
    return books_of, refs, texts


@functools.lru_cache(maxsize=4)
def read_sword_bible(root: str, module: str) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """Every verse of a SWORD Bible module: ``(books, refs, texts)`` (OSIS book names, ``"John 3:16"``-style
    references, cleaned texts). Read once per process, and cached on disk under ``$JAXDL_CACHE_DIR/sword``.

    Raises:
      DataError: naming the module and the apt packages when the module is not installed.
    """
    modules, found = _sword_modules(root)
    if module not in found:
        raise DataError(f"SWORD module {module!r} not installed under {root!r}: install it with apt-get install "
                        f"{SWORD_PACKAGES} (found: {', '.join(sorted(found)) or 'none'})")
    path = tokenize.cache_root().parent / "sword" / f"{module}-{_module_key(root, module, found[module])}.json.gz"
    if path.is_file():
        try:
            with gzip.open(path, "rt", encoding="utf-8") as f:
                d = json.load(f)
            return tuple(d["books"]), tuple(d["refs"]), tuple(d["texts"])
        except (OSError, ValueError, KeyError):
            pass  # a damaged entry: read the module again
    books, refs, texts = _read_module(modules, root, module)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        with gzip.open(tmp, "wt", encoding="utf-8") as f:
            json.dump({"books": books, "refs": refs, "texts": texts}, f)
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only cache costs the reading time next time
    return tuple(books), tuple(refs), tuple(texts)


@register_source("bible_en_es", "seq2seq")
def bible_en_es(cfg) -> ParallelSource:
    """King James Bible (English) -> Reina-Valera 1909 (Spanish), verse-aligned; held-out books for validation
    and test (apt-get install sword-text-kjv sword-text-sparv)."""
    root = str(Path(cfg.root).expanduser()) if cfg.root is not None else SWORD_ROOT
    en_books, refs, en = read_sword_bible(root, BIBLE_MODULES["en"])
    es_books, es_refs, es = read_sword_bible(root, BIBLE_MODULES["es"])
    if es_refs != refs:
        raise DataError(f"SWORD modules {BIBLE_MODULES['en']!r} and {BIBLE_MODULES['es']!r} have different "
                        f"versifications ({len(refs)} vs {len(es_refs)} verses); they cannot be aligned")
    keep = [i for i in range(len(refs)) if en[i] and es[i]]
    return ParallelSource(
        tuple(en[i] for i in keep), tuple(es[i] for i in keep), tuple(en_books[i] for i in keep),
        tuple(refs[i] for i in keep), BIBLE_VAL_BOOKS, BIBLE_TEST_BOOKS, name="bible_en_es",
        description=f"King James Bible ({BIBLE_MODULES['en']}) -> Reina-Valera 1909 ({BIBLE_MODULES['es']}), "
                    "verse-aligned SWORD modules",
        source_lang="en", target_lang="es",
        info={"root": root, "verses": len(refs), "skipped_empty": len(refs) - len(keep)})


# --------------------------------------------------------------------------------------------------------------------
# Splitting, tokenising, padding
# --------------------------------------------------------------------------------------------------------------------


def _check_config(cfg, name: str) -> None:
    for key in ("max_source_len", "max_target_len"):
        v = getattr(cfg, key)
        if isinstance(v, bool) or not isinstance(v, int) or v < 2:
            raise ConfigError(f"data.{key}: expected an int >= 2 (tokens, end of sequence included), got {v!r}")
    if cfg.tokenizer == "char":
        raise ConfigError(f"data.tokenizer='char': parallel data set {name!r} needs a subword tokenizer; set "
                          "data.tokenizer=bpe (or wordpiece, or a path to a tokenizer.json)")
    if cfg.tokenizer in ("bpe", "wordpiece") and (isinstance(cfg.vocab_size, bool) or
                                                  not isinstance(cfg.vocab_size, int) or cfg.vocab_size < 1):
        raise ConfigError(f"data.vocab_size: expected an int >= 1, got {cfg.vocab_size!r}")
    if cfg.split != "auto":
        raise ConfigError(f"data.split={cfg.split!r}: parallel data set {name!r} is split by its held-out groups "
                          "(or at random without them); use auto")
    if cfg.kind not in (None, "seq2seq"):
        raise ConfigError(f"data.kind={cfg.kind!r}: {name!r} is a parallel (seq2seq) data set")
    for key in ("resize", "channels", "context"):
        if getattr(cfg, key) is not None:
            raise ConfigError(f"data.{key} does not apply to parallel data set {name!r}")


def _split(src: ParallelSource, cfg) -> tuple[list[np.ndarray], str]:
    """Indices of the train / val / test pairs and the strategy's description."""
    n = len(src.source)
    if src.val_groups or src.test_groups:
        groups = np.asarray(src.groups)
        known = set(src.groups)
        for what, held in (("val_groups", src.val_groups), ("test_groups", src.test_groups)):
            missing = [g for g in held if g not in known]
            if missing:
                raise DataError(f"parallel corpus {src.name!r}: {what} {', '.join(missing)} have no pairs")
        overlap = set(src.val_groups) & set(src.test_groups)
        if overlap:
            raise DataError(f"parallel corpus {src.name!r}: groups {', '.join(sorted(overlap))} are held out twice")
        val = np.flatnonzero(np.isin(groups, src.val_groups))
        test = np.flatnonzero(np.isin(groups, src.test_groups))
        train = np.flatnonzero(~np.isin(groups, src.val_groups + src.test_groups))
        return [train, val, test], "held-out groups"
    train, val, test = random_split(n, cfg.val_fraction, cfg.test_fraction, cfg.split_seed)
    return [np.sort(train), np.sort(val), np.sort(test)], "random"


def _tokenizer(cfg, texts: list[str]):
    """The tokenizer of ``data.tokenizer`` (bpe/wordpiece: trained on ``texts``) and its ``info`` entry."""
    if cfg.tokenizer in ("bpe", "wordpiece"):
        path = tokenize.train_tokenizer_file(texts, cfg.tokenizer, cfg.vocab_size)
    else:
        p = Path(cfg.tokenizer).expanduser()
        try:
            tokenize.load_tokenizer(p)
        except DataError as e:
            raise DataError(f"data.tokenizer: {e}") from None
        path = p / "tokenizer.json" if p.is_dir() else p
    tok = tokenize.load_tokenizer(path)
    special = tokenize.special_ids(tok)
    if special.get("pad") != 0 or "eos" not in special:
        raise DataError(f"data.tokenizer={cfg.tokenizer!r}: a sequence-to-sequence data set needs a padding token "
                        f"with id 0 (the decoder's start token) and an end-of-sequence token; this tokenizer's special "
                        f"ids are {special}")
    kind = cfg.tokenizer if cfg.tokenizer in ("bpe", "wordpiece") else "file"
    return tok, {"kind": kind, "vocab_size": int(tok.get_vocab_size()), "special": special,
                 "json": str(Path(path).resolve())}


def _pad(seqs: list[np.ndarray], limit: int, eos: int) -> tuple[np.ndarray, np.ndarray]:
    """EOS-terminated, right-padded ids ``(N, L)`` and their mask (1 up to and including EOS), ``L`` the longest
    sequence but at most ``limit``; a longer sequence is cut to ``limit - 1`` ids and EOS."""
    width = int(min(limit, max((len(s) + 1 for s in seqs), default=1)))
    ids = np.zeros((len(seqs), width), np.int32)  # (N, L)
    lengths = np.zeros(len(seqs), np.int64)
    for i, s in enumerate(seqs):
        body = s[:width - 1]
        ids[i, :len(body)] = body
        ids[i, len(body)] = eos
        lengths[i] = len(body) + 1
    mask = (np.arange(width)[None, :] < lengths[:, None]).astype(np.int32)  # (N, L)
    return ids, mask


def build_parallel(src: ParallelSource, cfg) -> Dataset:
    """Split, tokenise and pad ``src`` as ``cfg`` says (see the module docstring)."""
    _check_config(cfg, src.name)
    if len(src.source) < 3:
        raise DataError(f"parallel corpus {src.name!r} has {len(src.source)} pairs; it needs at least 3")
    idx, strategy = _split(src, cfg)
    if cfg.train_limit is not None:
        idx[0] = idx[0][evenly_spaced(len(idx[0]), cfg.train_limit)]
    if cfg.eval_limit is not None:
        idx[1:] = [i[evenly_spaced(len(i), cfg.eval_limit)] for i in idx[1:]]
    for part, i in zip(PARTS, idx):
        if len(i) == 0:
            raise DataError(f"parallel corpus {src.name!r}: the {part} split is empty")
    train_texts = [src.source[i] for i in idx[0]] + [src.target[i] for i in idx[0]]
    tok, tok_info = _tokenizer(cfg, train_texts)
    eos = tok_info["special"]["eos"]
    refs = src.refs or tuple(f"#{i}" for i in range(len(src.source)))
    splits, counts, text = {}, {"dropped": {}, "truncated": {}, "pairs": {}}, {}
    limits = {"source": cfg.max_source_len, "target": cfg.max_target_len}
    for part, i in zip(PARTS, idx):
        sides = {"source": [src.source[j] for j in i], "target": [src.target[j] for j in i]}
        enc = {k: tokenize.encode_texts(tok, v) for k, v in sides.items()}
        too_long = np.zeros(len(i), bool)
        for k in sides:
            too_long |= np.array([len(s) + 1 > limits[k] for s in enc[k]], bool)
        drop = part == "train"
        if drop:  # a training pair is kept only when both sides fit
            keep = np.flatnonzero(~too_long)
            enc = {k: [v[j] for j in keep] for k, v in enc.items()}
            counts["dropped"][part] = int(too_long.sum())
        else:
            counts["truncated"][part] = int(too_long.sum())
        if drop and len(enc["source"]) == 0:
            raise DataError(f"parallel corpus {src.name!r}: every training pair is longer than data.max_source_len="
                            f"{cfg.max_source_len} / data.max_target_len={cfg.max_target_len} tokens")
        arrays = {}
        for k in ("source", "target"):
            arrays[k], arrays[f"{k}_mask"] = _pad(enc[k], limits[k], eos)
        splits[part] = arrays
        counts["pairs"][part] = len(arrays["source"])
        if part != "train":
            text[part] = {**sides, "refs": [refs[j] for j in i]}
    # every split padded to the same widths (one compiled evaluation)
    for k in ("source", "target"):
        width = max(s[k].shape[1] for s in splits.values())
        for s in splits.values():
            pad = width - s[k].shape[1]
            s[k] = np.pad(s[k], ((0, 0), (0, pad)))
            s[f"{k}_mask"] = np.pad(s[f"{k}_mask"], ((0, 0), (0, pad)))
    held = {"val": list(src.val_groups), "test": list(src.test_groups)} if strategy == "held-out groups" else None
    info = {"split": strategy, "held_out": held, "tokenizer": tok_info, **counts, "text": text,
            "source_lang": src.source_lang, "target_lang": src.target_lang,
            "max_source_len": cfg.max_source_len, "max_target_len": cfg.max_target_len, **src.info}
    order = ("source", "source_mask", "target", "target_mask")
    train, val, test = (Split.rows({k: splits[p][k] for k in order}, inputs=("source", "source_mask"),
                                   targets=("target", "target_mask")) for p in PARTS)
    return Dataset(src.name, train, val, test, tok_info["vocab_size"], (), (splits["train"]["source"].shape[1],),
                   None, None, inputs=("source", "source_mask"), targets=("target", "target_mask"), kind="seq2seq",
                   description=src.description or f"parallel corpus {src.name}", info=info)
