"""Attribution: which input pixels (or feature-map regions) drive a model's score for a class.

All functions are pure and batched over ``x`` (B, H, W, C); ``f`` is a scoring function ``f(x) -> (B, classes)``,
e.g. ``lambda x: model(variables, x)`` (eval mode). ``target`` is a class index per example (B,).

- :func:`saliency` — vanilla gradient ``|∂f_c/∂x|`` (Simonyan et al. 2014).
- :func:`smoothgrad` — the gradient averaged over ``n`` noisy copies ``x + N(0, σ²)`` (Smilkov et al. 2017).
- :func:`integrated_gradients` — ``(x - x') ⊙ ∫₀¹ ∂f_c(x' + α(x - x'))/∂x dα`` by the trapezoid rule
  (Sundararajan et al. 2017); the attributions sum to ``f_c(x) - f_c(x')`` (completeness).
- :func:`grad_cam` — ``ReLU(Σ_k w_k A_k)`` with ``w_k`` the spatial mean of ``∂f_c/∂A_k`` for a convolutional layer's
  output ``A`` (Selvaraju et al. 2017); works on any Linen model by intercepting the named layer.

Transformers: :func:`attention_maps` returns every attention layer's probabilities per head, (B, H, Tq, Tk), keyed by
layer path; :func:`plot_attention` draws them as a grid of layers × heads.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxdl.errors import JaxdlError

Score = Callable[[jax.Array], jax.Array]


def _class_score(f: Score, target: jax.Array) -> Callable[[jax.Array], jax.Array]:
    """Sum over the batch of each example's target score (examples are independent, so the gradient of the sum
    w.r.t. example i is that example's own gradient)."""

    def score(x):
        out = f(x)  # (B, classes)
        return jnp.sum(jnp.take_along_axis(out, target[:, None], axis=1))

    return score


def saliency(f: Score, x: jax.Array, target: jax.Array, reduce_channels: bool = True) -> jax.Array:
    """``|∂f_target/∂x|``; with ``reduce_channels`` the max over channels, (B, H, W)."""
    grads = jnp.abs(jax.grad(_class_score(f, target))(x))
    return grads.max(axis=-1) if reduce_channels else grads


def smoothgrad(f: Score, x: jax.Array, target: jax.Array, key: jax.Array, n: int = 25, sigma: float = 0.15,
               reduce_channels: bool = True) -> jax.Array:
    """Mean gradient over ``n`` copies with Gaussian noise of std ``sigma · (max(x) - min(x))`` per example."""
    score = jax.grad(_class_score(f, target))
    spread = (x.max(axis=(1, 2, 3), keepdims=True) - x.min(axis=(1, 2, 3), keepdims=True)) * sigma

    def one(k):
        return score(x + spread * jax.random.normal(k, x.shape, x.dtype))

    grads = jax.lax.map(one, jax.random.split(key, n)).mean(axis=0)
    return jnp.abs(grads).max(axis=-1) if reduce_channels else grads


def integrated_gradients(f: Score, x: jax.Array, target: jax.Array, baseline: jax.Array | None = None,
                         steps: int = 64) -> jax.Array:
    """Integrated gradients along the straight path from ``baseline`` (default zeros) to ``x``; (B, H, W, C)."""
    baseline = jnp.zeros_like(x) if baseline is None else jnp.broadcast_to(baseline, x.shape)
    score = jax.grad(_class_score(f, target))
    alphas = jnp.linspace(0.0, 1.0, steps + 1)
    grads = jax.lax.map(lambda a: score(baseline + a * (x - baseline)), alphas)  # (steps+1, B, H, W, C)
    weights = jnp.full((steps + 1,), 1.0 / steps).at[0].set(0.5 / steps).at[-1].set(0.5 / steps)  # trapezoid
    avg = jnp.tensordot(weights, grads, axes=1)
    return (x - baseline) * avg


def layer_names(module: nn.Module, variables, x: jax.Array) -> list[str]:
    """Paths of the submodules called on ``x`` (candidates for Grad-CAM's ``layer``)."""
    names: list[str] = []

    def record(next_fun, args, kwargs, ctx):
        out = next_fun(*args, **kwargs)
        if ctx.method_name == "__call__" and ctx.module.path:
            names.append("/".join(map(str, ctx.module.path)))
        return out

    with nn.intercept_methods(record):
        jax.eval_shape(lambda v, x: module.apply(v, x, train=False), variables, x)
    return list(dict.fromkeys(names))


def conv_layers(module: nn.Module, variables, x: jax.Array) -> list[str]:
    """Paths of the submodules whose output is a (B, H, W, C) feature map, in call order."""
    names: list[str] = []

    def record(next_fun, args, kwargs, ctx):
        out = next_fun(*args, **kwargs)
        if ctx.method_name == "__call__" and ctx.module.path and getattr(out, "ndim", 0) == 4:
            names.append("/".join(map(str, ctx.module.path)))
        return out

    with nn.intercept_methods(record):
        jax.eval_shape(lambda v, x: module.apply(v, x, train=False), variables, x)
    return list(dict.fromkeys(names))


def grad_cam(module: nn.Module, variables, x: jax.Array, target: jax.Array, layer: str,
             upsample: bool = True) -> jax.Array:
    """Grad-CAM heat maps (B, H, W) in [0, 1] for ``layer`` (a submodule path such as ``"c3"`` or
    ``"layer4_1/conv2"``; :func:`layer_names` lists them) of a Linen ``module``."""
    holder: dict[str, jax.Array] = {}

    def forward(eps):
        def intercept(next_fun, args, kwargs, ctx):
            out = next_fun(*args, **kwargs)
            if ctx.method_name == "__call__" and "/".join(map(str, ctx.module.path)) == layer:
                if out.ndim != 4:
                    raise JaxdlError(f"grad_cam: layer {layer!r} outputs shape {out.shape}; it needs a (B, H, W, C) "
                                     "feature map (choose a convolutional layer)")
                holder["A"] = out
                return out + (eps if eps is not None else 0.0)
            return out

        with nn.intercept_methods(intercept):
            return module.apply(variables, x, train=False)

    jax.eval_shape(lambda: forward(None))
    if "A" not in holder:
        raise JaxdlError(f"grad_cam: no layer named {layer!r}; layers: "
                         f"{', '.join(layer_names(module, variables, x))}")
    shape = holder["A"].shape

    def score(eps):
        out = forward(eps)
        return jnp.sum(jnp.take_along_axis(out, target[:, None], axis=1)), holder["A"]

    grads, acts = jax.grad(score, has_aux=True)(jnp.zeros(shape, x.dtype))  # (B, h, w, K) each
    weights = grads.mean(axis=(1, 2), keepdims=True)  # (B, 1, 1, K)
    cam = jax.nn.relu((weights * acts).sum(axis=-1))  # (B, h, w)
    cam = cam / (cam.max(axis=(1, 2), keepdims=True) + 1e-12)
    if upsample:
        cam = jax.image.resize(cam, (cam.shape[0], x.shape[1], x.shape[2]), method="bilinear")
    return cam


def overlay(image, heat, path, title: str = "") -> None:
    """Save ``image`` (H, W, C in any range) with ``heat`` (H, W) drawn over it as a PNG."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    img = np.asarray(image, np.float32)
    img = (img - img.min()) / (img.max() - img.min() + 1e-12)
    # a Figure with its own canvas: the user's matplotlib backend and pyplot state are left alone
    fig = Figure(figsize=(6, 3))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2)
    axes[0].imshow(img.squeeze(), cmap="gray" if img.shape[-1] == 1 else None)
    axes[0].set_title("input", fontsize=8)
    axes[1].imshow(img.squeeze(), cmap="gray" if img.shape[-1] == 1 else None)
    axes[1].imshow(np.asarray(heat), cmap="jet", alpha=0.5)
    axes[1].set_title(title, fontsize=8)
    for ax in axes:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)



# --------------------------------------------------------------------------------------------------------------------
# Attention maps (Transformers): what each layer's heads attend to
# --------------------------------------------------------------------------------------------------------------------


def _collect_attention(tree, path: tuple[str, ...], out: dict) -> None:
    """Depth-first over the ``intermediates`` collection in insertion (= call) order: every
    ``.../<module>/attention_weights`` entry becomes ``out["<module path>"]`` (``"<path>[i]"`` for the i-th call of a
    module called more than once)."""
    for key, value in tree.items():
        if key == "attention_weights":
            name = "/".join(path)
            for i, weights in enumerate(value):
                out[name if len(value) == 1 else f"{name}[{i}]"] = weights
        elif isinstance(value, Mapping):
            _collect_attention(value, (*path, str(key)), out)


def attention_maps(model, variables, inputs, **kwargs):
    """The attention probabilities of every :class:`~jaxdl.nn.MultiHeadAttention` layer of ``model``, per head:
    ``A[b, h, i, j] = softmax_j(q_i · k_j · scale + bias_ij)`` over the keys a query may see (masked keys: 0).

    Runs ``model`` once with the ``intermediates`` collection mutable, where each attention layer records its
    weights (without that collection they are never kept, so ordinary calls cost nothing extra).

    Args:
      model: a jaxdl Model (``models.get(...)``; its Linen module is used) or a Linen module.
      variables: the model's variables (``{"params": …}`` plus any state collections).
      inputs: token ids (B, T), or a dict of named arrays passed as keyword arguments — BERT's ``tokens`` /
        ``token_types`` / ``token_mask``, T5's ``source`` / ``target_in`` / ``source_mask``.
      **kwargs: further keyword arguments of the call (``token_mask=…``, ``train=False``, ``method="encode"``).
    Returns:
      ``{layer path: (B, H, Tq, Tk) float32 numpy array}`` in call order (= layer order): ``"block_0/attn"``,
      ``"block_1/attn"`` … for GPT/Llama (grouped-query layers give one map per query head), ``"layer_0/attention"``
      for BERT, and for T5 ``"encoder/block_0/self_attention"`` …, then per decoder block ``…/self_attention`` and
      ``…/cross_attention`` (Tk = the source length).
    Raises:
      JaxdlError when ``model`` is neither a jaxdl Model nor a Linen module, or has no attention layer.
    """
    import numpy as np

    module = model.module if getattr(model, "module", None) is not None else model
    if not isinstance(module, nn.Module):
        raise JaxdlError(f"attention_maps: expected a jaxdl Model or a Linen module, got {type(model).__name__}")
    named = dict(inputs) if isinstance(inputs, Mapping) else {}
    named.update(kwargs)
    # arrays are traced; everything else (train=False, method="encode") is fixed in the compiled function
    arrays = {k: v for k, v in named.items() if isinstance(v, (jax.Array, np.ndarray))}
    static = {k: v for k, v in named.items() if k not in arrays}
    args = () if isinstance(inputs, Mapping) else (inputs,)
    clean = {k: v for k, v in variables.items() if k != "intermediates"}

    names: list[str] = []  # call order, read while tracing (a jitted function's output dicts come back sorted)

    @jax.jit
    def run(variables, args, arrays):
        state = module.apply(variables, *args, mutable=["intermediates"], **arrays, **static)[1]
        found: dict = {}
        _collect_attention(state.get("intermediates", {}), (), found)
        names[:] = list(found)
        return list(found.values())

    weights = run(clean, args, arrays)
    if not names:
        raise JaxdlError(f"attention_maps: {type(module).__name__} recorded no attention weights (it has no "
                         "jaxdl.nn.MultiHeadAttention layer)")
    return {name: np.asarray(w, np.float32) for name, w in zip(names, weights)}


def _pick_layers(maps, layers) -> list[str]:
    names = list(maps)
    if layers is None:
        return names
    picked = []
    for layer in layers:
        if isinstance(layer, int) and not isinstance(layer, bool):
            if not -len(names) <= layer < len(names):
                raise JaxdlError(f"plot_attention: layer index {layer} is out of range for {len(names)} maps")
            picked.append(names[layer])
        elif layer in maps:
            picked.append(layer)
        else:
            raise JaxdlError(f"plot_attention: no attention map named {layer!r}; maps: {', '.join(names)}")
    return picked


def plot_attention(maps, tokens, path, layers=None, heads=None, *, example: int = 0, key_tokens=None,
                   max_labels: int = 32):
    """Draw attention maps as a PNG grid: one row per layer, one column per head (query i down, key j across;
    colour 0 … 1).

    Args:
      maps: ``{layer: (B, H, Tq, Tk)}`` from :func:`attention_maps`.
      tokens: token strings labelling the query axis (and the key axis, unless ``key_tokens`` is given), or None.
        Labels are drawn on an axis whose length they match, when it has at most ``max_labels`` positions.
      path: the PNG file to write (folders are created).
      layers: layer names or indices into ``maps`` (default: all, in order).
      heads: head indices (default: every head of each layer).
      example: which batch element to draw.
      key_tokens: labels of the key axis when it differs from the queries' (T5 cross-attention: the source).
    Returns: the path written.
    Raises: JaxdlError naming an unknown layer, an out-of-range head or example, or empty ``maps``.
    """
    from pathlib import Path

    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not maps:
        raise JaxdlError("plot_attention: no attention maps to draw")
    names = _pick_layers(maps, layers)
    arrays = {}
    for name in names:
        a = np.asarray(maps[name])
        if a.ndim != 4:
            raise JaxdlError(f"plot_attention: map {name!r} has shape {a.shape}; expected (B, H, Tq, Tk)")
        if not -a.shape[0] <= example < a.shape[0]:
            raise JaxdlError(f"plot_attention: example {example} is out of range for a batch of {a.shape[0]}")
        arrays[name] = a[example]  # (H, Tq, Tk)
    width = max(a.shape[0] for a in arrays.values())
    cols = list(range(width)) if heads is None else [int(h) for h in heads]
    for h in cols:
        if not 0 <= h < width:
            raise JaxdlError(f"plot_attention: head {h} is out of range; the maps have {width} heads")
    queries = None if tokens is None else [str(t) for t in tokens]
    keys = queries if key_tokens is None else [str(t) for t in key_tokens]
    # a Figure with its own canvas: the user's matplotlib backend and pyplot state are left alone
    fig = Figure(figsize=(1.8 * len(cols) + 0.6, 1.8 * len(names) + 0.4))
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(names), len(cols), squeeze=False)
    for r, name in enumerate(names):
        a = arrays[name]
        for c, h in enumerate(cols):
            ax = axes[r, c]
            if h >= a.shape[0]:  # a layer with fewer heads than the widest
                ax.axis("off")
                continue
            ax.imshow(a[h], vmin=0.0, vmax=1.0, cmap="viridis", interpolation="nearest")
            ax.set_title(f"{name} · head {h}", fontsize=5)
            tq, tk = a.shape[1], a.shape[2]
            small = max(tq, tk) <= max_labels
            if small and keys is not None and len(keys) == tk:
                ax.set_xticks(range(tk), keys, rotation=90, fontsize=4)
            else:
                ax.set_xticks([])
            if small and c == 0 and queries is not None and len(queries) == tq:
                ax.set_yticks(range(tq), queries, fontsize=4)
            else:
                ax.set_yticks([])
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=150)
    return path


__all__ = ["attention_maps", "conv_layers", "grad_cam", "integrated_gradients", "layer_names", "overlay",
           "plot_attention", "saliency", "smoothgrad"]


# --------------------------------------------------------------------------------------------------------------------
# Token-level integrated gradients (text classifiers)
# --------------------------------------------------------------------------------------------------------------------
#
# Token ids are not differentiable, so integrated gradients run in embedding space: the path goes from a baseline
# embedding e' (every position the [PAD] embedding, or zeros) to the input's embeddings e = table[tokens], through a
# model that accepts ``embeddings=`` in place of its lookup (BERT, rnn_classifier). Per token t:
#
#     a_t = Σ_d (e_td - e'_td) · ∫₀¹ ∂f_c(e' + α(e - e'))/∂e_td dα      (trapezoid rule, ``steps`` intervals)
#
# and Σ_t a_t ≈ f_c(e) - f_c(e') (completeness), f_c the target class's logit. Padding positions hold the [PAD]
# embedding, so with the pad baseline they get exactly 0; masked out of the model, they get 0 with zeros as well.

from functools import partial  # noqa: E402  (this block is self-contained)

TEXT_BASELINES = ("pad", "zero")


def embedding_table(module: nn.Module, variables) -> jax.Array:
    """The (V, E) token-embedding table of a text model whose class names its path in ``token_embedding``
    (``"word_embeddings/embedding"`` for BERT, ``"embedding/embedding"`` for rnn_classifier).

    Raises:
      JaxdlError naming the model when it has no such table (it cannot take ``embeddings=``).
    """
    path = getattr(type(module), "token_embedding", None)
    node = variables.get("params", {}) if path else None
    for key in (path or "").split("/"):
        node = node.get(key) if isinstance(node, dict) else None
    if node is None or getattr(node, "ndim", 0) != 2:
        raise JaxdlError(f"token attribution: model {type(module).__name__} has no token-embedding table "
                         f"({'no token_embedding path' if not path else 'nothing at params/' + path}); it needs "
                         "token-id inputs embedded by the model (BERT, or rnn_classifier with model.embed_dim > 0)")
    return node


def embedded_score(module: nn.Module, variables, inputs: dict) -> Score:
    """``f(e)``: the model's outputs (B, classes) on ``inputs`` (``tokens`` and any ``token_mask`` …) with the
    token embeddings replaced by ``e`` (B, T, E); eval mode, pure."""
    named = dict(inputs)

    def f(e):
        return module.apply(variables, **named, embeddings=e, train=False)

    return f


def token_integrated_gradients(module: nn.Module, variables, inputs: dict, target: jax.Array, *,
                               baseline: str = "pad", pad_id: int = 0, steps: int = 64) -> dict[str, jax.Array]:
    """Integrated gradients of the ``target`` logit per input token (see the block comment above for the formula).

    Args:
      module: a Linen text classifier taking ``tokens`` (B, T) and ``embeddings=`` (BERT; rnn_classifier).
      variables: its variables (``{"params": …}``).
      inputs: ``{"tokens": (B, T) int, "token_mask": (B, T), …}``, the keyword inputs the model reads.
      target: (B,) class per example.
      baseline: ``pad`` — the embedding of ``pad_id`` at every position; ``zero`` — zero embeddings.
      pad_id: the padding token's id (MiniLM's ``[PAD]`` is 0).
      steps: trapezoid intervals; the completeness gap shrinks as O(1/steps²) for smooth models.
    Returns:
      ``{"attributions": (B, T), "score": f_c(e) (B,), "baseline_score": f_c(e') (B,)}``.
    Raises:
      JaxdlError for an unknown baseline, a model without a token-embedding table or inputs without ``tokens``.
    """
    if baseline not in TEXT_BASELINES:
        raise JaxdlError(f"token attribution: unknown baseline {baseline!r}; expected one of "
                         f"{', '.join(TEXT_BASELINES)}")
    if "tokens" not in inputs:
        raise JaxdlError(f"token attribution: inputs need 'tokens' (B, T) ids, got {', '.join(inputs)}")
    embedding_table(module, variables)  # fails early, naming the model, when there is none
    return _token_ig(module, baseline, int(steps), variables, dict(inputs), jnp.asarray(target), jnp.asarray(pad_id))


@partial(jax.jit, static_argnums=(0, 1, 2))
def _token_ig(module, baseline, steps, variables, inputs, target, pad_id):
    table = embedding_table(module, variables)
    e = jnp.take(table, inputs["tokens"], axis=0)  # (B, T, E)
    base = jnp.broadcast_to(table[pad_id], e.shape) if baseline == "pad" else jnp.zeros_like(e)  # (B, T, E)
    f = embedded_score(module, variables, inputs)
    ig = integrated_gradients(f, e, target, base, steps)  # (B, T, E)

    def pick(out):
        return jnp.take_along_axis(out, target[:, None], axis=1)[:, 0]  # (B,)

    return {"attributions": ig.sum(axis=-1), "score": pick(f(e)), "baseline_score": pick(f(base))}


def token_attribution_html(tokens: list[str], attributions, title: str = "") -> str:
    """One HTML paragraph: each token on a background whose colour says its attribution's sign (red for, blue
    against the class) and whose strength is ``|a_t| / max_t |a_t|``."""
    import html

    import numpy as np

    a = np.asarray(attributions, np.float64)
    scale = float(np.max(np.abs(a))) if len(a) else 0.0
    spans = []
    for tok, v in zip(tokens, a):
        s = abs(v) / scale if scale > 0 else 0.0
        fade = int(255 * (1 - s))
        rgb = f"255,{fade},{fade}" if v >= 0 else f"{fade},{fade},255"
        spans.append(f'<span style="background: rgb({rgb})" title="{v:+.4f}">{html.escape(tok)}</span>')
    head = f"<h3>{html.escape(title)}</h3>\n" if title else ""
    return f"{head}<p style=\"font-family: monospace; line-height: 1.8\">{' '.join(spans)}</p>\n"


__all__ += ["TEXT_BASELINES", "embedded_score", "embedding_table", "token_attribution_html",
            "token_integrated_gradients"]
