"""Train the Fashion-MNIST feature classifier that :mod:`jaxdl.gen_metrics` scores generated images with.

LeNet-5 (ReLU, max pooling) trained through :func:`jaxdl.train.fit` on the full Fashion-MNIST training split (10%
held out for validation). Inputs are pixels in [0, 1], NOT standardised, so generated images in [0, 1] can be scored
without knowing the training statistics. Writes ``jaxdl/assets/fashion_mnist_features.npz`` and prints its test
accuracy and sha256 (paste the sha256 into ``jaxdl/gen_metrics.py::WEIGHTS_SHA256``).

Run:  python3 scripts/train_feature_classifier.py [--epochs 8] [--out jaxdl/assets/fashion_mnist_features.npz]
"""

from __future__ import annotations

import argparse
import hashlib
import tempfile
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from jaxdl.config import Config, DataConfig, OptimConfig, TrainConfig, model_config
from jaxdl.data import load
from jaxdl.train import fit
from jaxdl.transfer import save_variables

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--out", default=str(ROOT / "jaxdl/assets/fashion_mnist_features.npz"))
    args = ap.parse_args()
    data_cfg = DataConfig(name="fashion_mnist", val_fraction=0.1, standardize=False)
    cfg = Config(name="fashion_mnist_features", model=model_config("lenet5", activation="relu", pool="max"),
                 data=data_cfg, optim=OptimConfig(name="adam", lr=2e-3, schedule="cosine"),
                 train=TrainConfig(batch_size=128, epochs=args.epochs, driver="auto", progress=False))
    with tempfile.TemporaryDirectory() as tmp:
        result = fit(cfg, workdir=Path(tmp) / "run")
    variables = {"params": result.state.params, **(result.state.model_state or {})}
    data = load(data_cfg)
    probs = result.predict(data.test.x, standardize=False)
    acc = float(np.mean(np.argmax(probs, axis=-1) == data.test.y))
    meta = {"model": "lenet5", "activation": "relu", "pool": "max", "num_classes": 10, "inputs": "[0, 1] pixels",
            "epochs": args.epochs, "test_accuracy": round(acc, 4)}
    out = save_variables(args.out, variables, meta)
    digest = hashlib.sha256(out.read_bytes()).hexdigest()
    print(f"test accuracy {acc:.4f} on {len(data.test.y)} images")
    print(f"wrote {out} ({out.stat().st_size} bytes) sha256 {digest}")


if __name__ == "__main__":
    main()
