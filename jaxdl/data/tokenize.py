"""Subword tokenizers (the ``tokenizers`` library) and a disk cache of trained tokenizers and encoded corpora.

Two kinds are trained here:

* ``bpe`` — byte-level BPE: text is mapped to bytes (each byte shown as one printable character) before merges are
  learnt, so every string round-trips exactly through :func:`encode_texts` and :func:`decode` and there is never an
  unknown token.
* ``wordpiece`` — BERT-style WordPiece with case kept: words are split on whitespace and punctuation, pieces after
  the first carry the ``##`` prefix, and a word with no cover becomes ``[UNK]``.

Special tokens take ids ``0..`` in the order given. Training and encoding are deterministic for the same inputs.

Cache: trained tokenizers and encoded corpora are stored under ``$JAXDL_CACHE_DIR`` (default ``~/.cache/jaxdl``) in
``tokens/``: a trained tokenizer as ``tokens/<key>/tokenizer.json`` (key: kind, vocabulary size, special tokens,
minimum pair frequency and a hash of the texts), a corpus as ``tokens/<key>.npz`` (key: the tokenizer's JSON
serialisation and a hash of the texts). Both keys include :data:`FORMAT_VERSION`. Files are written atomically (a
temporary name, then a rename), so concurrent processes never read a half-written entry; an unreadable entry is
recomputed.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

from jaxdl.errors import ConfigError, DataError

# Bumped whenever what a cache key stands for changes (the training recipe or the stored layout).
FORMAT_VERSION = 1
KINDS = ("bpe", "wordpiece")
DEFAULT_SPECIAL = {"bpe": ("<pad>", "<unk>", "<s>", "</s>"),
                   "wordpiece": ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")}
# Names a special token goes by, per role, in the order they are tried (first found wins); the fallbacks let a
# BERT-style tokenizer answer bos/eos and a GPT-style one cls/sep.
_ROLES = {
    "pad": ("<pad>", "[PAD]", "<|pad|>"),
    "unk": ("<unk>", "[UNK]", "<|unk|>"),
    "bos": ("<s>", "<bos>", "<|startoftext|>", "<|begin_of_text|>", "[CLS]"),
    "eos": ("</s>", "<eos>", "<|endoftext|>", "<|end_of_text|>", "[SEP]"),
    "cls": ("[CLS]", "<cls>", "<s>"),
    "sep": ("[SEP]", "<sep>", "</s>"),
    "mask": ("[MASK]", "<mask>"),
}


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """The directory tokenizers and token files are cached in: ``cache_dir`` if given, else
    ``$JAXDL_CACHE_DIR/tokens`` (default ``~/.cache/jaxdl/tokens``; the same root as the training probes' cache)."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    root = os.environ.get("JAXDL_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "jaxdl")
    return Path(root) / "tokens"


def _hash_texts(h, texts: Sequence[str]) -> None:
    # each text is length-prefixed so ["ab", "c"] and ["a", "bc"] hash differently
    h.update(f"{len(texts)}\n".encode())
    for t in texts:
        b = t.encode("utf-8", errors="surrogatepass")
        h.update(f"{len(b)}\n".encode())
        h.update(b)


def _atomic_write(path: Path, write) -> None:
    """``write(tmp_path)`` then rename onto ``path`` (concurrent readers see the old file or the whole new one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _check_train_args(kind: str, vocab_size: int, min_frequency: int) -> None:
    if kind not in KINDS:
        raise ConfigError(f"tokenizer kind {kind!r} is unknown; expected one of {', '.join(KINDS)}")
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 1:
        raise ConfigError(f"tokenizer vocab_size: expected an int >= 1, got {vocab_size!r}")
    if isinstance(min_frequency, bool) or not isinstance(min_frequency, int) or min_frequency < 0:
        raise ConfigError(f"tokenizer min_frequency: expected an int >= 0, got {min_frequency!r}")


def _new_tokenizer(kind: str, vocab_size: int, special: list[str], min_frequency: int):
    """An untrained tokenizer of ``kind`` and its trainer."""
    if kind == "bpe":
        tok = Tokenizer(models.BPE())
        # add_prefix_space=False: a leading space is not invented, so decode(encode(s)) == s for every s
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=special,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    else:
        unk = next((s for s in special if s in _ROLES["unk"]), None)
        tok = Tokenizer(models.WordPiece(unk_token=unk or "[UNK]", continuing_subword_prefix="##"))
        # case is kept (lowercase=False) and accents too: only control characters are cleaned and CJK isolated
        tok.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=False,
                                                    lowercase=False)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece(prefix="##")
        trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                            special_tokens=special, continuing_subword_prefix="##",
                                            show_progress=False)
    return tok, trainer


def train_tokenizer_file(texts: Iterable[str], kind: str = "bpe", vocab_size: int = 8000,
                         special_tokens: Sequence[str] | None = None, min_frequency: int = 2,
                         cache_dir: str | os.PathLike | None = None) -> Path:
    """Train a tokenizer (or find the one trained on the same inputs) and return its cached ``tokenizer.json``.

    Args:
      texts: the training texts (consumed once; their hash is part of the cache key).
      kind: ``"bpe"`` (byte-level BPE) or ``"wordpiece"`` (BERT-style, case kept).
      vocab_size: the target vocabulary size, special tokens included. Byte-level BPE always keeps its 256 byte
        symbols, so its vocabulary is at least ``256 + len(special_tokens)``.
      special_tokens: tokens given ids ``0..`` in this order; None: :data:`DEFAULT_SPECIAL` of the kind.
      min_frequency: a pair (BPE) or piece (WordPiece) must occur this often to be merged.
      cache_dir: where to cache; None: :func:`cache_root`.

    Returns:
      The path of the cached ``tokenizer.json``.
    """
    _check_train_args(kind, vocab_size, min_frequency)
    special = list(DEFAULT_SPECIAL[kind] if special_tokens is None else special_tokens)
    texts = [str(t) for t in texts]
    h = hashlib.sha256()
    h.update(json.dumps({"format": FORMAT_VERSION, "what": "tokenizer", "kind": kind, "vocab_size": vocab_size,
                         "special": special, "min_frequency": min_frequency}, sort_keys=True).encode())
    _hash_texts(h, texts)
    path = cache_root(cache_dir) / h.hexdigest() / "tokenizer.json"
    if path.is_file():
        try:
            Tokenizer.from_file(str(path))
            return path
        except Exception:  # a damaged entry (the library raises a bare Exception): train again and replace it
            pass
    tok, trainer = _new_tokenizer(kind, vocab_size, special, min_frequency)
    tok.train_from_iterator(texts, trainer=trainer, length=len(texts))
    _atomic_write(path, lambda tmp: tok.save(tmp))
    return path


def train_tokenizer(texts: Iterable[str], kind: str = "bpe", vocab_size: int = 8000,
                    special_tokens: Sequence[str] | None = None, min_frequency: int = 2,
                    cache_dir: str | os.PathLike | None = None) -> Tokenizer:
    """A trained tokenizer (cached on disk; see :func:`train_tokenizer_file` for the arguments).

    Returns:
      A ``tokenizers.Tokenizer``; its special tokens have ids ``0..len(special_tokens) - 1``.
    """
    return load_tokenizer(train_tokenizer_file(texts, kind, vocab_size, special_tokens, min_frequency, cache_dir))


def load_tokenizer(path: str | os.PathLike) -> Tokenizer:
    """A tokenizer from a ``tokenizer.json`` file, or from a directory holding one.

    Raises:
      DataError: naming the path, when it is missing or is not a readable tokenizer file.
    """
    p = Path(path).expanduser()
    if p.is_dir():
        p = p / "tokenizer.json"
    if not p.is_file():
        raise DataError(f"tokenizer file {str(p)!r} not found (expected a tokenizer.json file or a directory "
                        "holding one)")
    try:
        return Tokenizer.from_file(str(p))
    except Exception as e:  # the library raises a bare Exception for bad JSON or an unknown model
        raise DataError(f"tokenizer file {str(p)!r} cannot be read: {e}") from None


def special_ids(tok: Tokenizer) -> dict[str, int]:
    """The ids of the special tokens ``tok`` has, by role: keys among ``pad, unk, bos, eos, cls, sep, mask``.

    Recognised names: ``<pad>``/``[PAD]``, ``<unk>``/``[UNK]``, ``<s>``/``[CLS]`` (bos, cls), ``</s>``/``[SEP]``/
    ``<|endoftext|>`` (eos, sep), ``[MASK]``/``<mask>``; a role no token fills is left out.
    """
    out = {}
    for role, names in _ROLES.items():
        for n in names:
            i = tok.token_to_id(n)
            if i is not None:
                out[role] = int(i)
                break
    return out


def _encode_batch(tok: Tokenizer, texts: list[str]) -> list[np.ndarray]:
    # the library encodes a batch on all its threads; no special tokens: callers add the ones they want
    return [np.asarray(e.ids, dtype=np.int32) for e in tok.encode_batch(texts, add_special_tokens=False)]


def corpus_key(tok: Tokenizer, texts: Sequence[str]) -> str:
    """The cache key of ``texts`` encoded by ``tok``: sha256 of the format version, the tokenizer's JSON and the
    texts."""
    h = hashlib.sha256()
    h.update(f"jaxdl-tokens-v{FORMAT_VERSION}\n".encode())
    h.update(tok.to_str().encode())
    _hash_texts(h, texts)
    return h.hexdigest()


def encode_texts(tok: Tokenizer, texts: Sequence[str], cache_dir: str | os.PathLike | None | bool = None
                 ) -> list[np.ndarray]:
    """Token ids of each text (no special tokens added), read from the disk cache when the same tokenizer has
    encoded the same texts before.

    Args:
      tok: the tokenizer.
      texts: the texts.
      cache_dir: where the ``<key>.npz`` file lives; None: :func:`cache_root`; False: no cache.

    Returns:
      One ``(n_i,)`` int32 array per text.
    """
    texts = [str(t) for t in texts]
    if cache_dir is False:
        return _encode_batch(tok, texts)
    path = cache_root(cache_dir) / f"{corpus_key(tok, texts)}.npz"
    if path.is_file():
        try:
            with np.load(path) as z:
                ids, lengths = z["ids"], z["lengths"]
            if len(lengths) == len(texts) and int(lengths.sum()) == len(ids):
                return np.split(ids.astype(np.int32, copy=False), np.cumsum(lengths)[:-1])
        except (OSError, ValueError, KeyError):
            pass  # a damaged entry: encode again and replace it
    out = _encode_batch(tok, texts)
    lengths = np.array([len(a) for a in out], dtype=np.int64)
    ids = np.concatenate(out) if out else np.zeros(0, np.int32)  # (sum of lengths,)

    def write(tmp):
        with open(tmp, "wb") as f:
            np.savez(f, ids=ids, lengths=lengths)

    try:
        _atomic_write(path, write)
    except OSError:
        pass  # a read-only cache directory only costs the encoding time next time
    return out


def token_characters(tok: Tokenizer) -> np.ndarray:
    """How many characters each token id adds to decoded text, so that bits per character can be summed per token.

    Byte-level BPE: the UTF-8 bytes of the token that start a character (continuation bytes ``0x80..0xBF`` count 0),
    so the counts of any token sequence sum to the characters of its decoded text even when a character's bytes
    are split between tokens. WordPiece: the piece's length without the ``##`` prefix (the spaces between words are
    not tokens and are not counted). Other models: the length of the token decoded alone. Special and added tokens
    count 0.

    Returns:
      ``(vocab_size,)`` float32.
    """
    spec = json.loads(tok.to_str())
    model = spec.get("model") or {}
    byte_level = (spec.get("decoder") or {}).get("type") == "ByteLevel"
    if byte_level:
        # chr(x) for x in 0x80..0xBF is the two bytes (0xC2, x): the second symbol is continuation byte x's
        pre = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
        continuation = {pre.pre_tokenize_str(chr(x))[0][0][1] for x in range(0x80, 0xC0)}
    prefix = model.get("continuing_subword_prefix") or "##"
    added = set(tok.get_added_tokens_decoder())
    out = np.zeros(tok.get_vocab_size(), np.float32)
    for i in range(len(out)):
        piece = tok.id_to_token(i)
        if i in added or piece is None:
            continue
        if byte_level:
            out[i] = sum(c not in continuation for c in piece)
        elif model.get("type") == "WordPiece":
            out[i] = len(piece[len(prefix):] if piece.startswith(prefix) else piece)
        else:
            out[i] = len(tok.decode([i]))
    return out


def decode(tok: Tokenizer, ids) -> str:
    """The text of token ids (special tokens kept, so an end-of-document token stays visible)."""
    return tok.decode([int(i) for i in np.asarray(ids).reshape(-1)], skip_special_tokens=False)
