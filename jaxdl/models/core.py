"""The model boundary: a model is a pair of pure functions.

    init(rng, example) -> variables                      # {"params": ..., "batch_stats": ...}
    apply(variables, inputs, *, train, rngs=None, mutable=(), method=None, dropout_rate=None)
        -> (outputs, new_model_state)

``inputs`` is one array (a single-input model) or a dict of the batch's named arrays (a model that reads several, e.g.
``tokens`` and ``segment_ids``: a Linen module is then called as ``module(**inputs, train=...)``). ``rngs`` maps RNG
stream names to keys (``{"dropout": key}``; ``rng=key`` is short for that). ``new_model_state`` holds every
non-parameter collection after the call: batch statistics are updated in training mode, and ``mutable`` names more
collections a call may update (e.g. a decoding ``cache``); in eval mode it otherwise equals the input's. ``method``
calls another method of the module (``encode``, ``decode``). ``dropout_rate`` overrides the model's configured rate
and may be a traced array, so sweeping it never recompiles. :func:`from_linen` wraps a Flax Linen module, :func:`from_nnx` a Flax NNX module; nothing above
``jaxdl.models`` knows which one built a model.

Mixed precision (:meth:`Model.with_compute_dtype`): a model may compute in bfloat16 or float16 while its variables
stay float32 — ``apply`` casts the floating ``params`` (never ``batch_stats`` or other state) and floating inputs to
the compute dtype, and casts the outputs back to float32 and the returned state to its incoming dtypes, so losses,
metrics and normalisation statistics are float32 and gradients flow back as float32 through the casts.

Inputs are checked before tracing: when a model knows its per-example ``input_shape`` (``models.get(...,
input_shape=...)`` or :meth:`Model.with_input`), a wrong shape or dtype raises :class:`~jaxdl.errors.ModelInputError`
naming the model, the expected and the actual shape.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxdl.errors import JaxdlError, ModelInputError
from jaxdl.precision import cast_floating, cast_like

Variables = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Model:
    """A named pair of pure functions plus what is needed to check inputs.

    Attributes:
      name: registry name or a user-given label; used in every error message.
      init_fn: ``(rng, x) -> variables``.
      apply_fn: ``(variables, x, train, rng, dropout_rate) -> (outputs, new_model_state)``.
      input_shape: per-example input shape (no batch axis), or None if unknown.
      input_kind: ``"float"`` (images, features) or ``"int"`` (token ids).
      output: what ``apply`` returns: ``logits`` | ``softmax`` | ``sigmoid`` | ``step`` | ``linear``.
      config: the model family's config dataclass, when built from the registry.
      compute_dtype: the dtype ``apply`` computes in (None: the variables' own, float32); see
        :meth:`with_compute_dtype`.
    """

    name: str
    init_fn: Callable[..., Variables]
    apply_fn: Callable[..., tuple[jax.Array, Variables]]
    input_shape: tuple[int, ...] | None = None
    input_kind: str = "float"
    output: str = "logits"
    config: Any = None
    # the Linen module behind init/apply, when there is one (attribution intercepts its layers)
    module: Any = None
    compute_dtype: Any = None

    # ---------------------------------------------------------------------------------------------------------------
    def init(self, rng: jax.Array, example: jax.Array) -> Variables:
        """Create variables from an example batch (only its shape and dtype matter)."""
        self.check_input(example)
        return self._call(self.init_fn, example, rng, example)

    def apply(self, variables: Variables, x: Any, *, train: bool = False, rng: jax.Array | None = None,
              dropout_rate: jax.Array | float | None = None, rngs: dict[str, jax.Array] | None = None,
              mutable: tuple[str, ...] | list[str] = (), method: str | None = None) -> tuple[Any, Variables]:
        """Run the model on ``x`` (an array or a dict of named arrays). Returns ``(outputs, new_model_state)``.

        Args:
          train: training mode (dropout on, batch statistics updated).
          rng: the dropout key (short for ``rngs={"dropout": rng}``).
          rngs: RNG streams by name.
          mutable: further collections the call may update (returned in ``new_model_state``).
          method: name of the module method to call instead of ``__call__``.
        """
        if method is None:
            self.check_input(x)
        rngs = dict(rngs or {})
        if rng is not None:
            rngs.setdefault("dropout", rng)
        extra = {"mutable": tuple(mutable), "method": method} if (mutable or method) else {}
        if self.compute_dtype is None:
            return self._call(self.apply_fn, x, variables, x, train, rngs or None, dropout_rate, **extra)
        dtype = self.compute_dtype
        cast = {**variables, "params": cast_floating(variables["params"], dtype)} if "params" in variables \
            else variables
        out, state = self._call(self.apply_fn, x, cast, cast_floating(x, dtype), train, rngs or None, dropout_rate,
                                **extra)
        # outputs in float32 (losses and metrics); state collections the call received keep their dtypes (batch
        # statistics stay float32, so a scan carrying them is type-stable); new ones (a cache) are left as made
        state = {k: _restore_dtypes(v, variables[k]) if k in variables else v for k, v in state.items()}
        return cast_floating(out, jnp.float32), state

    def __call__(self, variables: Variables, x: jax.Array, **kw) -> jax.Array:
        """Outputs only, in eval mode by default (convenient in notebooks)."""
        return self.apply(variables, x, **kw)[0]

    # ---------------------------------------------------------------------------------------------------------------
    def with_input(self, shape_or_example: Any, kind: str | None = None) -> Model:
        """This model, checking inputs against a per-example shape (or an example batch's shape[1:])."""
        if hasattr(shape_or_example, "shape"):
            shape = tuple(shape_or_example.shape[1:])
            if kind is None:
                kind = "int" if jnp.issubdtype(shape_or_example.dtype, jnp.integer) else "float"
        else:
            shape = tuple(int(s) for s in shape_or_example)
        return dataclasses.replace(self, input_shape=shape, input_kind=kind or self.input_kind)

    def with_compute_dtype(self, dtype: Any) -> Model:
        """This model computing in ``dtype`` (``jnp.bfloat16``, ``jnp.float16``; float32 or None: full precision).

        Variables are unchanged (float32); ``apply`` casts the floating ``params`` and inputs to ``dtype`` and casts
        the outputs back to float32 (see the module docstring). ``init`` is unchanged.
        """
        dt = None if dtype is None or jnp.dtype(dtype) == jnp.float32 else jnp.dtype(dtype)
        if dt is not None and not jnp.issubdtype(dt, jnp.floating):
            raise JaxdlError(f"model {self.name!r}: compute dtype must be a floating dtype, got {dt}")
        return dataclasses.replace(self, compute_dtype=dt)

    def expected(self) -> str:
        if self.input_shape is None:
            return "unknown"
        dims = ", ".join(str(d) for d in ("batch", *self.input_shape))
        return f"({dims}) {self.input_kind}"

    def check_input(self, x: Any) -> None:
        """Raise ModelInputError unless ``x`` is a batch this model accepts. Static: works on tracers."""
        if isinstance(x, dict):
            if len(x) == 1:
                return self.check_input(next(iter(x.values())))
            for name, value in x.items():
                if not hasattr(value, "shape"):
                    raise ModelInputError(f"model {self.name!r}: input {name!r} must be an array, got "
                                          f"{type(value).__name__}")
            return None
        shape = getattr(x, "shape", None)
        dtype = getattr(x, "dtype", None)
        if shape is None or dtype is None:
            raise ModelInputError(f"model {self.name!r}: inputs must be an array, got {type(x).__name__}")
        shape = tuple(shape)
        if self.input_shape is not None and shape[1:] != self.input_shape:
            hint = ""
            if len(shape) == len(self.input_shape):
                hint = " (is the batch axis missing? use x[None] for a single example)"
            raise ModelInputError(
                f"model {self.name!r} expects inputs of shape {self.expected()}, got {shape} {dtype}{hint}")
        is_float = jnp.issubdtype(dtype, jnp.floating)
        is_int = jnp.issubdtype(dtype, jnp.integer)
        if self.input_kind == "float" and not is_float:
            raise ModelInputError(
                f"model {self.name!r} expects floating-point inputs of shape {self.expected()}, got {shape} {dtype}"
                + (" (scale integer images to floats first, e.g. x / 255)" if is_int else ""))
        if self.input_kind == "int" and not is_int:
            raise ModelInputError(
                f"model {self.name!r} expects integer token ids of shape {self.expected()}, got {shape} {dtype}")

    def _call(self, fn, x, *args, **kwargs):
        if self.input_shape is not None:  # inputs already checked statically; other errors are real bugs
            return fn(*args, **kwargs)
        from flax.errors import FlaxError

        try:
            return fn(*args, **kwargs)
        except JaxdlError:
            raise
        except (TypeError, ValueError, FlaxError) as e:
            # Shape unknown up front: translate the first failure into a message naming the model.
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            got = (", ".join(f"{k}: {tuple(v.shape)} {v.dtype}" for k, v in x.items()) if isinstance(x, dict)
                   else f"{tuple(x.shape)} {x.dtype}")
            raise ModelInputError(f"model {self.name!r} cannot take inputs of shape {got}: {first[:300]}") from e

    # ---------------------------------------------------------------------------------------------------------------
    def abstract_variables(self, batch_size: int = 1) -> Variables:
        """Shapes/dtypes of the variables, without allocating (``jax.eval_shape``)."""
        if self.input_shape is None:
            raise JaxdlError(f"model {self.name!r}: input shape unknown; call model.with_input(shape) first")
        dtype = jnp.int32 if self.input_kind == "int" else jnp.float32
        example = jax.ShapeDtypeStruct((batch_size, *self.input_shape), dtype)
        return jax.eval_shape(self.init, jax.random.key(0), example)

    def param_count(self) -> int:
        return count_params(self.abstract_variables()["params"])


def _restore_dtypes(new: Any, old: Any) -> Any:
    """``new`` (a state collection after a call) with floating leaves cast to the dtypes of ``old``'s leaves, when the
    two have the same structure (a collection the call may reshape, e.g. a cache, is left as it is)."""
    try:
        return cast_like(new, old)
    except (ValueError, TypeError):
        return new


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    config_cls: type  # the family's ModelConfig dataclass
    build: Callable[[Any, int], Any]  # (config, num_classes) -> linen module
    # per-example input shape used by `jaxdl models` to count parameters
    example_shape: tuple[int, ...] = (28, 28, 1)
    description: str = ""
    # what the model reads: "float" (images, features, series) or "int" (token ids)
    input_kind: str = "float"


def count_params(tree: Any) -> int:
    """Number of scalars in a pytree of arrays or ShapeDtypeStructs."""
    return int(sum(math.prod(np.shape(leaf)) for leaf in jax.tree.leaves(tree)))


# --------------------------------------------------------------------------------------------------------------------
# Adapters
# --------------------------------------------------------------------------------------------------------------------


def _accepts(fn: Callable[..., Any], name: str) -> bool:
    import inspect

    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return True
    return name in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def _positional(x: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """A single array is the first argument; several named arrays are keyword arguments."""
    if isinstance(x, dict):
        if len(x) == 1:
            return (next(iter(x.values())),), {}
        return (), dict(x)
    return (x,), {}


def from_linen(module: nn.Module, name: str | None = None, *, output: str = "logits", input_shape=None,
               input_kind: str = "float", config: Any = None, accepts_dropout_rate: bool | None = None) -> Model:
    """Wrap a Linen module whose ``__call__(x, *, train)`` (``train`` and ``dropout_rate=`` are optional) returns
    outputs.

    Dropout draws from the ``"dropout"`` RNG stream (any other stream the module uses is passed through ``rngs``);
    batch-norm statistics live in ``batch_stats`` and are updated only when ``train=True``. A module whose
    ``__call__`` has no ``train`` argument is called without it (e.g. a user's plain MLP).
    """
    name = name or type(module).__name__.lower()
    call = type(module).__call__
    if accepts_dropout_rate is None:
        accepts_dropout_rate = _accepts(call, "dropout_rate")
    takes_train = _accepts(call, "train")

    def init_fn(rng, x):
        params_rng, dropout_rng = jax.random.split(rng)
        args, kwargs = _positional(x)
        if takes_train:
            kwargs["train"] = False
        variables = module.init({"params": params_rng, "dropout": dropout_rng}, *args, **kwargs)
        return dict(variables)

    def apply_fn(variables, x, train, rngs, dropout_rate, mutable=(), method=None):
        args, kwargs = _positional(x)
        fn = getattr(type(module), method) if method else call
        if _accepts(fn, "train") if method else takes_train:
            kwargs["train"] = train
        if accepts_dropout_rate and dropout_rate is not None and method is None:
            kwargs["dropout_rate"] = dropout_rate
        state = {k: v for k, v in variables.items() if k != "params"}
        collections = list(mutable)
        if train and "batch_stats" in variables:
            collections.append("batch_stats")
        extra = {"method": method} if method else {}
        if collections:
            out, updates = module.apply(variables, *args, rngs=rngs or {}, mutable=collections, **extra, **kwargs)
            state = {**state, **dict(updates)}
        else:
            out = module.apply(variables, *args, rngs=rngs or {}, **extra, **kwargs)
        return out, state

    return Model(name, init_fn, apply_fn, tuple(input_shape) if input_shape is not None else None, input_kind,
                 output, config, module)


def from_nnx(constructor: Callable[..., Any], name: str | None = None, *, output: str = "logits", input_shape=None,
             input_kind: str = "float") -> Model:
    """Wrap a Flax NNX module as a pure init/apply pair.

    Args:
      constructor: ``constructor(rngs: nnx.Rngs) -> nnx.Module``; called inside ``init`` with RNGs from the key.
        The module is called as ``module(x)``; ``train`` switches it with ``module.train()`` / ``module.eval()``.

    ``variables["params"]`` holds the ``nnx.Param`` state; every other variable type (batch statistics, RNG
    counters) lives in ``variables["nnx_state"]``. Dropout keys come from ``rng`` (the module is reseeded each call),
    so apply stays a pure function of its arguments.
    """
    from flax import nnx

    abstract = nnx.eval_shape(lambda: constructor(nnx.Rngs(0)))
    graphdef, _, _ = nnx.split(abstract, nnx.Param, ...)
    label = name or type(abstract).__name__.lower()

    def is_key(x) -> bool:
        return jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)

    def to_pure(state):
        # RNG keys (dropout streams) are kept as their raw uint32 data: variables stay plain arrays that stack,
        # move to the host and checkpoint like any other
        pure = nnx.to_pure_dict(state) if hasattr(nnx, "to_pure_dict") else state.to_pure_dict()
        return jax.tree.map(lambda x: jax.random.key_data(x) if is_key(x) else x, pure)

    def from_pure(template, pure):
        spec = nnx.to_pure_dict(template) if hasattr(nnx, "to_pure_dict") else template.to_pure_dict()
        keys = jax.tree.map(lambda t, x: jax.random.wrap_key_data(x) if is_key(t) else x, spec, pure)
        nnx.replace_by_pure_dict(template, keys)

    def init_fn(rng, x):
        del x  # NNX modules create their variables in the constructor
        module = constructor(nnx.Rngs(params=rng, dropout=jax.random.fold_in(rng, 1), default=rng))
        _, params, rest = nnx.split(module, nnx.Param, ...)
        return {"params": to_pure(params), "nnx_state": to_pure(rest)}

    def apply_fn(variables, x, train, rngs, dropout_rate, mutable=(), method=None):
        rng = (rngs or {}).get("dropout")
        _, params_t, rest_t = nnx.split(abstract, nnx.Param, ...)
        nnx.replace_by_pure_dict(params_t, variables["params"])
        from_pure(rest_t, variables["nnx_state"])
        module = nnx.merge(graphdef, params_t, rest_t)
        if train:
            module.train()
            if rng is not None:
                nnx.reseed(module, dropout=rng, default=rng)
        else:
            module.eval()
        args, kwargs = _positional(x)
        out = (getattr(module, method) if method else module)(*args, **kwargs)
        _, _, rest = nnx.split(module, nnx.Param, ...)
        new_state = {"nnx_state": to_pure(rest)} if train or mutable else {"nnx_state": variables["nnx_state"]}
        return out, new_state

    return Model(label, init_fn, apply_fn, tuple(input_shape) if input_shape is not None else None, input_kind,
                 output)


def as_model(obj: Any, name: str | None = None, *, output: str = "logits", input_shape=None,
             input_kind: str = "float") -> Model:
    """A :class:`Model` from what a user has: a Model (returned with the input shape filled in), a Linen module, an
    NNX module *constructor* ``rngs -> nnx.Module`` (each seed initialises its own parameters), or an NNX module
    instance (its current parameters are the initial ones for every seed — pass a constructor to vary them).

    Raises:
      JaxdlError: for anything else, naming its type.
    """
    if isinstance(obj, Model):
        if obj.input_shape is None and input_shape is not None:
            return dataclasses.replace(obj, input_shape=tuple(input_shape), input_kind=input_kind)
        return obj
    if isinstance(obj, nn.Module):
        return from_linen(obj, name, output=output, input_shape=input_shape, input_kind=input_kind)
    from flax import nnx

    if isinstance(obj, nnx.Module):
        graphdef, state = nnx.split(obj)
        label = name or type(obj).__name__.lower()
        return from_nnx(lambda rngs: nnx.merge(graphdef, state), label, output=output, input_shape=input_shape,
                        input_kind=input_kind)
    if callable(obj):
        return from_nnx(obj, name, output=output, input_shape=input_shape, input_kind=input_kind)
    raise JaxdlError(f"cannot use {type(obj).__name__} as a model: expected a jaxdl Model, a Flax Linen module, an "
                     "NNX module or a function rngs -> nnx.Module")
