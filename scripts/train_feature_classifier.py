"""Train a feature classifier that :mod:`jaxdl.gen_metrics` scores generated images with.

LeNet-5 (ReLU, max pooling) trained through :func:`jaxdl.train.fit` on pixels in [0, 1], NOT standardised, so
generated images in [0, 1] can be scored without knowing the training statistics.

- ``--data fashion_mnist`` (default): the Fashion-MNIST training split, 10% held out for validation (8 epochs).
  Writes ``jaxdl/assets/fashion_mnist_features.npz``.
- ``--data mnist5k``: the TRAIN split of MNIST-5k as :func:`jaxdl.data.load` carves it by default (test 15%, then
  validation 15% of the rest, ``split_seed`` 0; stratified), so the validation and test images that generated
  samples are scored against are never seen by the classifier. Writes ``jaxdl/assets/mnist_features.npz``.

Prints the test accuracy and the sha256 (paste the sha256 into ``jaxdl/gen_metrics.py``: ``WEIGHTS_SHA256`` or
``MNIST_WEIGHTS_SHA256``, and the accuracy into its module docstring).

Run:  python3 scripts/train_feature_classifier.py [--data fashion_mnist|mnist5k] [--epochs N] [--out FILE.npz]
"""

from __future__ import annotations

import argparse
import hashlib
import tempfile
from pathlib import Path

import numpy as np

from jaxdl.config import Config, DataConfig, OptimConfig, TrainConfig, model_config
from jaxdl.data import load
from jaxdl.train import fit
from jaxdl.transfer import save_variables

ROOT = Path(__file__).resolve().parent.parent

# data set -> (data config, default epochs, output file)
SETUPS = {
    "fashion_mnist": (DataConfig(name="fashion_mnist", val_fraction=0.1, standardize=False), 8,
                      "jaxdl/assets/fashion_mnist_features.npz"),
    # the library's default split of MNIST-5k (the one tasks score against); only its train part is learned from
    "mnist5k": (DataConfig(name="mnist5k", standardize=False), 40, "jaxdl/assets/mnist_features.npz"),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", choices=sorted(SETUPS), default="fashion_mnist")
    ap.add_argument("--epochs", type=int, default=None, help="default: 8 (fashion_mnist), 40 (mnist5k)")
    ap.add_argument("--out", default=None, help="default: jaxdl/assets/<fashion_mnist|mnist>_features.npz")
    args = ap.parse_args()
    data_cfg, default_epochs, default_out = SETUPS[args.data]
    epochs = args.epochs or default_epochs
    cfg = Config(name=f"{args.data}_features", model=model_config("lenet5", activation="relu", pool="max"),
                 data=data_cfg, optim=OptimConfig(name="adam", lr=2e-3, schedule="cosine"),
                 train=TrainConfig(batch_size=128, epochs=epochs, driver="auto", progress=False))
    with tempfile.TemporaryDirectory() as tmp:
        result = fit(cfg, workdir=Path(tmp) / "run")
    variables = {"params": result.state.params, **(result.state.model_state or {})}
    data = load(data_cfg)
    accuracy = {}
    for part in ("val", "test"):
        split = getattr(data, part)
        probs = result.predict(split.x, standardize=False)
        accuracy[part] = float(np.mean(np.argmax(probs, axis=-1) == split.y))
    meta = {"model": "lenet5", "activation": "relu", "pool": "max", "num_classes": 10, "inputs": "[0, 1] pixels",
            "data": args.data, "train_images": int(len(data.train.y)), "epochs": epochs,
            "val_accuracy": round(accuracy["val"], 4), "test_accuracy": round(accuracy["test"], 4)}
    out = save_variables(args.out or str(ROOT / default_out), variables, meta)
    digest = hashlib.sha256(out.read_bytes()).hexdigest()
    print(f"trained on {len(data.train.y)} images; val accuracy {accuracy['val']:.4f} on {len(data.val.y)}, "
          f"test accuracy {accuracy['test']:.4f} on {len(data.test.y)} images")
    print(f"wrote {out} ({out.stat().st_size} bytes) sha256 {digest}")


if __name__ == "__main__":
    main()
