"""GPT on the Python standard library's sources (always present) in byte-level BPE tokens, files packed as
documents: a 4,096-token BPE trained on the training span only, each file followed by ``</s>``, attention and
positions restarting at each file (segment ids), and the first token of the next file never scored. Reports
bits per token and bits per character (comparable with a character model's bpc) beside the unigram and bigram
baselines of the same tokens, and samples decoded with the tokenizer (summary.json, samples.txt). The tokenizer and
the encoded corpus are cached under $JAXDL_CACHE_DIR/tokens (default ~/.cache/jaxdl/tokens).

Run:    jaxdl train configs/stdlib_bpe_gpt.py
Smoke:  jaxdl train configs/stdlib_bpe_gpt.py:smoke   (a 512-token BPE trained on the first 200,000 characters)
"""

from jaxdl.config import Config, DataConfig, OptimConfig, TrainConfig, model_config, variant


def get_config(name: str | None = None) -> Config:
    cfg = Config(
        name="stdlib_bpe_gpt",
        seed=0,
        model=model_config("gpt", context_length=128, d_model=128, num_layers=4, num_heads=4, dropout=0.0),
        data=DataConfig(name="python_stdlib", tokenizer="bpe", vocab_size=4096, documents=True, block_size=128,
                        val_fraction=0.05, test_fraction=0.05, eval_limit=1000),
        optim=OptimConfig(name="adamw", lr=1e-3, schedule="warmup_cosine", warmup_steps=100, weight_decay=0.01,
                          clip_norm=1.0),
        train=TrainConfig(batch_size=32, steps=3000, eval_every=250, driver="host", eval_batch_size=250),
    )
    return variant(cfg, name,
                   smoke={"model.d_model": 32, "model.num_layers": 1, "model.num_heads": 2,
                          "model.context_length": 32, "data.block_size": 32, "data.eval_limit": 64,
                          "data.vocab_size": 512, "data.tokenizer_chars": 200_000,
                          "train.batch_size": 8, "train.steps": 10, "train.eval_every": 5, "train.progress": False})
