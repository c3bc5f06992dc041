"""Offline scores for generative models of Fashion-MNIST: Fréchet distance, k-NN precision/recall, class accuracy.

No Inception network can be fetched here, so the features come from a small classifier shipped with jaxdl:
LeNet-5 (ReLU, max pooling; 61,706 parameters) trained by ``scripts/train_feature_classifier.py`` (8 epochs of
Adam, lr 2e-3 cosine, batch 128, 10% of the training split held out) on Fashion-MNIST pixels in [0, 1] —
**unstandardised**, so generated images in [0, 1] are scored as they are. Test accuracy: 0.9024
on the 10,000 test images. The features are the 84 ReLU activations of its penultimate layer ``f6``.

The Fréchet distance in this feature space is **not comparable to Inception FID** (different network, 84 rather
than 2048 features, grayscale 28×28 inputs): compare models with each other and with :func:`reference_points`,
never with published FID numbers. ``reference_points(5000)`` measured: real vs real (disjoint test halves) 0.27,
precision/recall 0.886/0.887; real vs full-covariance pixel Gaussian 59.9, precision/recall 0.580/0.372.

>>> fd = frechet_distance(features(real), features(fake))
>>> pr = precision_recall(features(real), features(fake), k=3)
"""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxdl.errors import CheckpointError, DataError
from jaxdl.models.lenet import LeNet5

WEIGHTS_PATH = Path(__file__).resolve().parent / "assets" / "fashion_mnist_features.npz"
WEIGHTS_SHA256 = "90851d540450d00b887d5d0f2f9bc57e0d138feeae54e5350ff0d1ab9bd586ce"
FEATURE_LAYER = "f6"  # the 84-unit penultimate Dense layer; its ReLU output is the feature vector
IMAGE_SHAPE = (28, 28, 1)


class FeatureClassifier(NamedTuple):
    """The loaded classifier: its Linen module, variables and the metadata stored with them."""

    module: LeNet5
    variables: dict[str, Any]
    meta: dict[str, Any]


def load_feature_classifier(path: str | Path | None = None, sha256: str | None = None) -> FeatureClassifier:
    """Load the shipped classifier after checking the weights file's sha256.

    Args:
      path: the ``.npz`` (default: the file shipped in ``jaxdl/assets``).
      sha256: the expected hex digest (default: :data:`WEIGHTS_SHA256`).

    Returns:
      FeatureClassifier(module, variables, meta).

    Raises:
      CheckpointError naming the file when it is missing or its sha256 differs from the expected one.
    """
    from jaxdl.transfer import load_variables

    path = Path(path) if path is not None else WEIGHTS_PATH
    expected = sha256 or WEIGHTS_SHA256
    if not path.is_file():
        raise CheckpointError(f"feature classifier weights {str(path)!r} not found (write them with "
                              f"scripts/train_feature_classifier.py)")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != expected:
        raise CheckpointError(f"feature classifier weights {str(path)!r}: sha256 {digest} does not match the "
                              f"expected {expected} (file damaged or replaced)")
    variables, meta = load_variables(path)
    module = LeNet5(num_outputs=int(meta.get("num_classes", 10)), activation=meta.get("activation", "relu"),
                    pool=meta.get("pool", "max"))
    return FeatureClassifier(module, variables, meta)


@functools.lru_cache(maxsize=1)
def _default_classifier() -> FeatureClassifier:
    return load_feature_classifier()


@functools.lru_cache(maxsize=4)
def _forward(module: LeNet5):
    """A jitted ``(variables, x) -> (features (B, 84), logits (B, 10))`` for ``module``."""

    def fwd(variables, x):
        logits, inter = module.apply(variables, x, capture_intermediates=lambda mdl, _: mdl.name == FEATURE_LAYER,
                                     mutable=["intermediates"])
        pre = inter["intermediates"][FEATURE_LAYER]["__call__"][0]  # (B, 84), before the ReLU
        return jax.nn.relu(pre), logits

    return jax.jit(fwd)


def _check_images(images: Any) -> np.ndarray:
    x = np.asarray(images, dtype=np.float32)
    if x.ndim == 3:
        x = x[..., None]  # (N, 28, 28) -> (N, 28, 28, 1)
    if x.shape[1:] != IMAGE_SHAPE:
        raise DataError(f"gen_metrics: expected images of shape (N, 28, 28) or (N, 28, 28, 1) with pixels in "
                        f"[0, 1], got {tuple(np.shape(images))}")
    return x


def _run(images: Any, batch_size: int, classifier: FeatureClassifier | None) -> tuple[np.ndarray, np.ndarray]:
    clf = classifier or _default_classifier()
    fwd = _forward(clf.module)
    x = _check_images(images)
    feats, logits = [], []
    for start in range(0, len(x), batch_size):
        chunk = x[start:start + batch_size]
        n = len(chunk)
        if n < batch_size and len(x) > batch_size:  # pad the last chunk so every call reuses one compilation
            chunk = np.concatenate([chunk, np.zeros((batch_size - n, *IMAGE_SHAPE), np.float32)])
        f, lg = fwd(clf.variables, jnp.asarray(chunk))
        feats.append(np.asarray(f)[:n])
        logits.append(np.asarray(lg)[:n])
    if not feats:
        raise DataError("gen_metrics: no images given")
    return np.concatenate(feats), np.concatenate(logits)


def features(images: Any, *, batch_size: int = 1000, classifier: FeatureClassifier | None = None) -> np.ndarray:
    """Penultimate-layer features of ``images`` (pixels in [0, 1], unstandardised).

    Args:
      images: ``(N, 28, 28)`` or ``(N, 28, 28, 1)``.
      batch_size: images per jitted call.
      classifier: default: the shipped one.

    Returns:
      float32 ``(N, 84)``.
    """
    return _run(images, batch_size, classifier)[0]


def conditional_accuracy(images: Any, labels: Any, *, batch_size: int = 1000,
                         classifier: FeatureClassifier | None = None) -> float:
    """The classifier's accuracy on class-conditional samples: the fraction whose predicted class is ``labels``.

    Args:
      images: ``(N, 28, 28[, 1])`` samples, pixels in [0, 1].
      labels: ``(N,)`` the classes the samples were generated for.

    Returns:
      accuracy in [0, 1].
    """
    labels = np.asarray(labels).reshape(-1)
    logits = _run(images, batch_size, classifier)[1]
    if len(labels) != len(logits):
        raise DataError(f"conditional_accuracy: {len(logits)} images but {len(labels)} labels")
    return float(np.mean(np.argmax(logits, axis=-1) == labels))


def _stats(feats: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    f = np.asarray(feats, dtype=np.float64)
    if f.ndim != 2 or len(f) < 2:
        raise DataError(f"frechet_distance: {name} must be (N >= 2, D) features, got shape {f.shape}")
    return f.mean(axis=0), np.cov(f, rowvar=False)


def _sqrt_psd(s: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh(s)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T  # V diag(sqrt w) V^T


def frechet_distance(feats_a: Any, feats_b: Any) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (means and full covariances).

    .. math:: d^2 = \\lVert\\mu_a-\\mu_b\\rVert^2 + \\operatorname{Tr}\\big(\\Sigma_a+\\Sigma_b
              - 2(\\Sigma_a^{1/2}\\Sigma_b\\Sigma_a^{1/2})^{1/2}\\big)

    ``Tr((Σa Σb)^{1/2}) = Tr((Σa^{1/2} Σb Σa^{1/2})^{1/2})``, and the latter is a symmetric PSD matrix: its square
    root comes from an eigen-decomposition with negative round-off eigenvalues clipped to 0, so the result is real
    and stable even for singular covariances (no complex ``sqrtm``). Computed in float64. Not comparable to
    Inception FID (see the module docstring).

    Args:
      feats_a, feats_b: ``(N, D)`` and ``(M, D)`` features.

    Returns:
      the squared distance ``d^2`` (>= 0), as FID reports it.
    """
    mu_a, cov_a = _stats(feats_a, "feats_a")
    mu_b, cov_b = _stats(feats_b, "feats_b")
    if mu_a.shape != mu_b.shape:
        raise DataError(f"frechet_distance: feature sizes differ: {mu_a.shape[0]} vs {mu_b.shape[0]}")
    root_a = _sqrt_psd(cov_a)
    cross = root_a @ cov_b @ root_a  # (D, D), symmetric PSD
    w = np.linalg.eigvalsh((cross + cross.T) / 2)
    tr_sqrt = float(np.sum(np.sqrt(np.clip(w, 0.0, None))))
    d2 = float(np.sum((mu_a - mu_b) ** 2) + np.trace(cov_a) + np.trace(cov_b) - 2.0 * tr_sqrt)
    return max(d2, 0.0)


def _sq_dists(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    # ||a||^2 + ||b||^2 - 2 a.b, (len(a), len(b)); clipped since round-off can make it slightly negative
    d = np.sum(a * a, 1)[:, None] + np.sum(b * b, 1)[None, :] - 2.0 * (a @ b.T)
    return np.maximum(d, 0.0)


def _knn_radii(feats: np.ndarray, k: int, chunk: int) -> np.ndarray:
    """Squared distance from each point to its k-th nearest other point (itself, at distance 0, is index 0)."""
    radii = []
    for s in range(0, len(feats), chunk):
        d = _sq_dists(feats[s:s + chunk], feats)  # (chunk, N)
        radii.append(np.partition(d, k, axis=1)[:, k])
    return np.concatenate(radii)


def _coverage(points: np.ndarray, centres: np.ndarray, radii: np.ndarray, chunk: int) -> float:
    """Fraction of ``points`` inside at least one ball (centre, radius) of the k-NN manifold."""
    inside = []
    for s in range(0, len(points), chunk):
        d = _sq_dists(points[s:s + chunk], centres)  # (chunk, M)
        inside.append(np.any(d <= radii[None, :], axis=1))
    return float(np.mean(np.concatenate(inside)))


def precision_recall(real_feats: Any, fake_feats: Any, k: int = 3, *, chunk: int = 1024) -> dict[str, float]:
    """Improved precision and recall (Kynkäänniemi et al., 2019) with k-NN manifolds.

    Each set's manifold is the union of balls around its points with radius the distance to the point's k-th
    nearest neighbour in the same set. ``precision`` = fraction of fake points inside the real manifold (sample
    quality); ``recall`` = fraction of real points inside the fake manifold (coverage).

    Args:
      real_feats, fake_feats: ``(N, D)``, ``(M, D)`` features (each with more than ``k`` points).
      k: neighbourhood size (the paper uses 3).
      chunk: rows of the distance matrix computed at once (memory).

    Returns:
      ``{"precision": p, "recall": r}``, each in [0, 1].
    """
    real = np.asarray(real_feats, dtype=np.float64)
    fake = np.asarray(fake_feats, dtype=np.float64)
    for name, f in (("real_feats", real), ("fake_feats", fake)):
        if f.ndim != 2 or len(f) <= k:
            raise DataError(f"precision_recall: {name} must be (N > k={k}, D) features, got shape {f.shape}")
    if real.shape[1] != fake.shape[1]:
        raise DataError(f"precision_recall: feature sizes differ: {real.shape[1]} vs {fake.shape[1]}")
    real_r, fake_r = _knn_radii(real, k, chunk), _knn_radii(fake, k, chunk)
    return {"precision": _coverage(fake, real, real_r, chunk), "recall": _coverage(real, fake, fake_r, chunk)}


def gaussian_samples(train_images: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Samples from a Gaussian with the training pixels' mean and FULL covariance, clipped to [0, 1].

    The simplest "generative model": a baseline any real model should beat by a wide margin.

    Args:
      train_images: ``(N, 28, 28[, 1])`` pixels in [0, 1].
      n: samples to draw.
      seed: numpy seed.

    Returns:
      float32 ``(n, 28, 28, 1)``.
    """
    x = _check_images(train_images).reshape(len(train_images), -1)  # (N, 784) float32
    mean = x.mean(axis=0, dtype=np.float64)
    centred = x - mean.astype(np.float32)  # (N, 784)
    # float32 product: 2.5x faster than float64 on 60,000 images, ample precision for a baseline sampler
    cov = (centred.T @ centred).astype(np.float64) / (len(x) - 1)  # (784, 784)
    rng = np.random.default_rng(seed)
    z = rng.multivariate_normal(mean, cov, size=n, method="eigh")  # (n, 784)
    return np.clip(z, 0.0, 1.0).astype(np.float32).reshape(n, *IMAGE_SHAPE)


def _compute_reference(root: str | None, n: int) -> dict[str, Any]:
    from jaxdl.data import load_raw

    raw = load_raw("fashion_mnist", root)
    test = raw.test_x.astype(np.float32) / float(raw.max_value)
    train = raw.train_x.astype(np.float32) / float(raw.max_value)
    if 2 * n > len(test):
        raise DataError(f"reference_points: n={n} per half but only {len(test)} test images")
    perm = np.random.default_rng(0).permutation(len(test))
    half_a, half_b = features(test[perm[:n]]), features(test[perm[n:2 * n]])
    gauss = features(gaussian_samples(train, n, seed=1))
    return {"n": n, "frechet_real_vs_real": frechet_distance(half_a, half_b),
            "frechet_real_vs_gaussian": frechet_distance(half_a, gauss),
            "pr_real_vs_real": precision_recall(half_a, half_b),
            "pr_real_vs_gaussian": precision_recall(half_a, gauss),
            "gaussian": "mean + full covariance of the training pixels, clipped to [0, 1]"}


@functools.lru_cache(maxsize=4)
def _reference_in_process(root: str | None, n: int) -> str:
    return json.dumps(_compute_reference(root, n))


def reference_points(n: int = 5000, *, root: str | None = None, cache: bool = True) -> dict[str, Any]:
    """Scores that put a model's numbers in context, on Fashion-MNIST.

    * real vs real: two disjoint random halves (``n`` images each) of the test split — the best reachable score;
    * real vs Gaussian: the first half against ``n`` samples of :func:`gaussian_samples` (a Gaussian with the
      training pixels' mean and full covariance, clipped to [0, 1]) — a floor a generator must clear.

    Cached in ``$JAXDL_CACHE_DIR/gen_metrics_reference_<n>_<sha>.json`` (keyed by the weights' sha256) when
    ``cache``, and always once per process.

    Args:
      n: images per side (at most 5000: the test split has 10,000).
      root: the Fashion-MNIST directory (default: the data set's default location).
      cache: read/write the on-disk cache.

    Returns:
      ``{"frechet_real_vs_real", "frechet_real_vs_gaussian", "pr_real_vs_real", "pr_real_vs_gaussian", ...}``.
    """
    from jaxdl.train.probe import cache_file

    path = cache_file(f"gen_metrics_reference_{n}_{WEIGHTS_SHA256[:12]}.json")
    if cache and root is None and path.is_file():
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            pass  # unreadable cache: recompute and overwrite
    result = json.loads(_reference_in_process(root, int(n)))
    if cache and root is None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(result, indent=1))
        except OSError:
            pass  # a read-only cache directory only costs a recomputation next time
    return result


def score(fake: Any, *, real: Any, labels: Any = None, k: int = 3, reference: bool = True,
          classifier: FeatureClassifier | None = None) -> dict[str, Any]:
    """Every score of generated images against real ones, in the shipped classifier's features.

    Args:
      fake: ``(N, 28, 28[, 1])`` generated images, pixels in [0, 1].
      real: ``(M, 28, 28[, 1])`` held-out real images (a test split), pixels in [0, 1].
      labels: ``(N,)`` the classes ``fake`` were generated for (class-conditional models): adds the classifier's
        ``conditional_accuracy`` on them.
      k: neighbourhood size of precision/recall.
      reference: add :func:`reference_points` (real vs real, real vs Gaussian) at the same ``N`` when the real
        side has enough images, else at the largest size the test split allows.

    Returns:
      ``{"frechet_distance", "precision", "recall", ["conditional_accuracy"], "samples": N, "real": M,
      "features": ..., ["reference": {...}]}``.
    """
    fake_f = features(fake, classifier=classifier)
    real_f = features(real, classifier=classifier)
    out: dict[str, Any] = {"frechet_distance": frechet_distance(real_f, fake_f),
                           **precision_recall(real_f, fake_f, k=k), "samples": int(len(fake_f)),
                           "real": int(len(real_f)),
                           "features": f"{FEATURE_LAYER} of the shipped LeNet-5 (not comparable to Inception FID)"}
    if labels is not None:
        out["conditional_accuracy"] = conditional_accuracy(fake, labels, classifier=classifier)
    if reference:
        out["reference"] = reference_points(min(int(len(fake_f)), 5000))
    return out
