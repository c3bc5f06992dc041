"""What the generative image tasks (VAE, GAN, diffusion) share: drawing samples, grids at every evaluation, scores.

A :class:`GenerativeImageTask` implements one pure function, :meth:`~GenerativeImageTask.generate` —
``(params, model_state, key, labels) -> images (n, H, W, C)`` with pixels in [0, 1] — and inherits

- :meth:`sample`: ``n`` images drawn in fixed-size jitted batches (one compilation whatever ``n``), with the labels
  they were generated for when the model is class-conditional (classes in turn: ``0, 1, …, C-1, 0, …``);
- :meth:`on_evaluation`: an 8 × 8 grid of samples from a fixed key at every evaluation,
  ``run_dir/samples/step_XXXXXXX.png`` (the same noise every time, so the grids show one model's progress; they
  also become TensorBoard images);
- :meth:`scores`: ``loss.score_samples`` samples scored by :func:`jaxdl.gen_metrics.score_splits` against the
  VALIDATION and the test split (Fréchet distance in the data set's shipped classifier's features,
  precision/recall, the classifier's accuracy on class-conditional samples) beside the real-vs-real and Gaussian
  reference points: ``{"scores": {"val": {...}, "test": {...}, "samples", "features", "reference": {...}}}``.
  Models are chosen by ``val`` (sweep reports rank by ``scores.val.frechet_distance``); ``test`` is the held-out
  number beside it. Data sets the shipped classifiers do not cover are reported as not scored, with the reason.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxdl.gen_metrics import SCORED_DATA  # noqa: F401 — data sets a shipped feature classifier covers
from jaxdl.tasks.base import Task

GRID_SEED = 0x6121  # the fixed noise of the per-evaluation grids
SCORE_SEED = 0x5C0E  # the samples that are scored after training
GRID_SIZE = 8  # grids are GRID_SIZE × GRID_SIZE images
SCORED_SPLITS = ("val", "test")  # val chooses models, test is reported beside it


def save_grid(images: np.ndarray, rows: int, path: Path, title: str | None = None) -> None:
    """Write ``images`` ``(N, H, W, C)`` in [0, 1] as a ``rows``-row grid PNG (a Figure with its own canvas, so
    the user's pyplot state is untouched)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    cols = math.ceil(len(images) / rows)
    fig = Figure(figsize=(cols * 0.8, rows * 0.8 + (0.3 if title else 0.0)))
    FigureCanvasAgg(fig)
    for i, img in enumerate(images):
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray", vmin=0.0, vmax=1.0)
        ax.set_axis_off()
    if title:
        fig.suptitle(title, fontsize=8)
    fig.savefig(path, dpi=80)


class GenerativeImageTask(Task):
    """Base of tasks whose models generate images. Subclasses set ``image_shape``, ``num_classes`` (0:
    unconditional), ``score_samples`` and implement :meth:`generate`."""

    image_shape: tuple[int, ...] = (28, 28, 1)
    num_classes: int = 0
    score_samples: int = 5000
    sample_batch: int = 500

    def generate(self, params: dict[str, Any], model_state: dict[str, Any], key: jax.Array, labels: jax.Array
                 ) -> jax.Array:
        """``n = len(labels)`` images ``(n, *image_shape)`` with pixels in [0, 1], drawn with ``key``; ``labels``
        ``(n,)`` int32 are the classes to generate (ignored by an unconditional model). Pure; jitted by
        :meth:`sample`."""
        raise NotImplementedError

    @property
    def conditional(self) -> bool:
        return self.num_classes > 0

    @functools.cached_property
    def _generate(self):
        return jax.jit(self.generate)

    def sample(self, params: dict[str, Any], model_state: dict[str, Any], n: int, seed: int = SCORE_SEED
               ) -> tuple[np.ndarray, np.ndarray | None]:
        """``n`` images ``(n, *image_shape)`` in [0, 1] and, for a class-conditional model, their labels ``(n,)``.

        Batch ``j`` of ``min(n, sample_batch)`` images uses ``fold_in(PRNGKey(seed), j)``."""
        size = min(n, self.sample_batch)
        classes = max(self.num_classes, 1)
        labels = np.arange(n) % classes
        out = []
        for j, start in enumerate(range(0, n, size)):
            chunk = labels[start:start + size]
            padded = np.concatenate([chunk, np.zeros(size - len(chunk), chunk.dtype)]) if len(chunk) < size else chunk
            key = jax.random.fold_in(jax.random.PRNGKey(seed), j)
            images = self._generate(params, model_state, key, jnp.asarray(padded, jnp.int32))
            out.append(np.asarray(images, np.float32)[:len(chunk)])
        return np.concatenate(out), (labels if self.conditional else None)

    def on_evaluation(self, params, model_state, dataset, run_dir, step):
        """An 8 × 8 grid of samples from a fixed key (class-conditional models: one class per column)."""
        from jaxdl.train.rundir import sample_grid_path

        if run_dir is None:
            return {}
        images, _ = self.sample(params, model_state, GRID_SIZE * GRID_SIZE, seed=GRID_SEED)
        save_grid(images, GRID_SIZE, sample_grid_path(run_dir, step), title=f"step {step}")
        return {}

    def scores(self, params: dict[str, Any], model_state: dict[str, Any], dataset) -> dict[str, Any]:
        """``{"scores": ...}``: :func:`jaxdl.gen_metrics.score_splits` of ``score_samples`` samples against the
        validation and test splits, ``{"val": {...}, "test": {...}, "samples", "features", "reference"}`` (or
        ``{"skipped": why}``; a split too small to score is ``{"skipped": why}`` in its place)."""
        if self.score_samples == 0:
            return {}
        if dataset.name not in SCORED_DATA:
            return {"scores": {"skipped": f"no shipped feature classifier for data set {dataset.name!r} (scored: "
                                          f"{', '.join(SCORED_DATA)})"}}
        if tuple(self.image_shape) != (28, 28, 1):
            return {"scores": {"skipped": f"the shipped classifiers read 28x28x1 images; data set "
                                          f"{dataset.name!r} gives {tuple(self.image_shape)} (data.resize or "
                                          "data.channels changed them)"}}
        from jaxdl import gen_metrics

        reals, skipped = {}, {}
        for split in SCORED_SPLITS:
            real = np.asarray(getattr(dataset, split).x, np.float32)
            if len(real) <= 3:  # precision/recall need more than k = 3 points
                skipped[split] = {"skipped": f"only {len(real)} {split} images"}
            else:
                reals[split] = real
        if not reals:
            return {"scores": {"skipped": "; ".join(v["skipped"] for v in skipped.values())}}
        fake, labels = self.sample(params, model_state, self.score_samples)
        out = gen_metrics.score_splits(fake, reals, labels=labels, data=dataset.name)
        return {"scores": {**{split: out.get(split, skipped.get(split)) for split in SCORED_SPLITS},
                           **{k: v for k, v in out.items() if k not in SCORED_SPLITS}}}
