"""MLP on scikit-learn's bundled 8×8 digits (1,797 images; 70/15/15 stratified split).

Run:    jaxdl train configs/digits_mlp.py
Smoke:  jaxdl train configs/digits_mlp.py:smoke
"""

from jaxdl.config import Config, DataConfig, OptimConfig, TrainConfig, model_config, variant


def get_config(name: str | None = None) -> Config:
    cfg = Config(
        name="digits_mlp",
        seed=0,
        model=model_config("mlp", widths=(256, 128), activation="relu", dropout=0.2, batch_norm=True),
        data=DataConfig(name="digits"),
        optim=OptimConfig(name="adam", lr=2e-3, schedule="cosine", weight_decay=1e-4),
        train=TrainConfig(batch_size=64, epochs=40, driver="scan", chunk_steps=100),
    )
    return variant(cfg, name, smoke={"train.steps": 20, "train.progress": False})
