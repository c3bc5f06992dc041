r"""Llama-style language models (Touvron et al. 2023): the decoder of :mod:`jaxdl.models.gpt` with rotary positions
(HF's rotate_half layout), RMS norm, a SwiGLU MLP, grouped-query attention and no biases.

``smollm2_135m`` has SmolLM2-135M's shape (read from its GGUF file's metadata: 30 layers, d_model 576, 9 query and 3
key/value heads, MLP 1536, vocabulary 49152, RoPE theta 100000, RMS-norm epsilon 1e-5, tied embeddings, context 8192):
134,515,008 parameters. Its pretrained weights load with :func:`jaxdl.gguf_import.load_packaged`.

Packed documents: ``segment_ids`` (B, T) given to the model (``data.documents``) keep attention inside each document
and restart the rotary positions at each document's first token (see :class:`jaxdl.models.gpt.DecoderLM`).
"""

from __future__ import annotations

from dataclasses import dataclass

from jaxdl.config import ModelConfig, config_variant
from jaxdl.errors import ConfigError
from jaxdl.models.gpt import DecoderLM, _check_positive
from jaxdl.nn.transformer import RMS_NORM_EPS


@dataclass(frozen=True)
class LlamaConfig(ModelConfig):
    """Llama-style model; ``num_classes`` is the vocabulary size (the data set's by default)."""

    name: str = "llama"
    # The longest sequence the model reads (RoPE has no table; this bounds the decoding cache).
    context_length: int = 256
    d_model: int = 128
    num_layers: int = 2
    num_heads: int = 4
    # Key/value heads (grouped-query attention); must divide num_heads.
    num_kv_heads: int = 2
    # SwiGLU hidden width.
    mlp_dim: int = 352
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    tie_embeddings: bool = True
    # Attention-weight and residual dropout (Llama: 0); the step may override it with a traced array.
    dropout: float = 0.0


VARIANTS: dict[str, type[LlamaConfig]] = {
    "smollm2_135m": config_variant(LlamaConfig, "smollm2_135m", num_classes=49152, context_length=8192, d_model=576,
                                   num_layers=30, num_heads=9, num_kv_heads=3, mlp_dim=1536, rope_theta=100000.0,
                                   norm_eps=RMS_NORM_EPS["smollm2"], tie_embeddings=True),
}


def build_llama(cfg: LlamaConfig, num_classes: int) -> DecoderLM:
    _check_positive(cfg, "context_length", "d_model", "num_layers", "num_heads", "num_kv_heads", "mlp_dim")
    if cfg.num_heads % cfg.num_kv_heads:
        raise ConfigError(f"model.num_heads={cfg.num_heads} is not divisible by model.num_kv_heads="
                          f"{cfg.num_kv_heads} (each key/value head serves an equal group of query heads)")
    if (cfg.d_model // cfg.num_heads) % 2:
        raise ConfigError(f"model: RoPE needs an even head size, got d_model / num_heads = "
                          f"{cfg.d_model // cfg.num_heads}")
    return DecoderLM(vocab_size=num_classes, context_length=cfg.context_length, d_model=cfg.d_model,
                     num_layers=cfg.num_layers, num_heads=cfg.num_heads, num_kv_heads=cfg.num_kv_heads,
                     mlp_dim=cfg.mlp_dim, activation="swiglu", positions="rope", norm="rms", norm_eps=cfg.norm_eps,
                     use_bias=False, rope_theta=cfg.rope_theta, tie_embeddings=cfg.tie_embeddings, dropout=cfg.dropout,
                     remat=cfg.remat == "blocks")


__all__ = ["LlamaConfig", "VARIANTS", "build_llama"]
