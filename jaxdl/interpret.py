"""Attribution: which input pixels (or feature-map regions) drive a model's score for a class.

All functions are pure and batched over ``x`` (B, H, W, C); ``f`` is a scoring function ``f(x) -> (B, classes)``,
e.g. ``lambda x: model(variables, x)`` (eval mode). ``target`` is a class index per example (B,).

- :func:`saliency` — vanilla gradient ``|∂f_c/∂x|`` (Simonyan et al. 2014).
- :func:`smoothgrad` — the gradient averaged over ``n`` noisy copies ``x + N(0, σ²)`` (Smilkov et al. 2017).
- :func:`integrated_gradients` — ``(x - x') ⊙ ∫₀¹ ∂f_c(x' + α(x - x'))/∂x dα`` by the trapezoid rule
  (Sundararajan et al. 2017); the attributions sum to ``f_c(x) - f_c(x')`` (completeness).
- :func:`grad_cam` — ``ReLU(Σ_k w_k A_k)`` with ``w_k`` the spatial mean of ``∂f_c/∂A_k`` for a convolutional layer's
  output ``A`` (Selvaraju et al. 2017); works on any Linen model by intercepting the named layer.
"""

from __future__ import annotations

from collections.abc import Callable

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


__all__ = ["conv_layers", "grad_cam", "integrated_gradients", "layer_names", "overlay", "saliency", "smoothgrad"]
