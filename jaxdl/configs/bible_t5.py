"""English -> Spanish translation of the Bible with a small T5 trained from scratch: King James Version verses
(source) to Reina-Valera 1909 verses (target), aligned by verse, whole books held out for validation and test
(jaxdl/data/parallel.py). One byte-level BPE vocabulary of 8,000 tokens for both languages, trained on the training
verses only; sequences of at most 64 tokens (longer training pairs dropped, held-out ones truncated). T5 v1.0
layout sized for an hour on 2 shared CPU cores (see experiments/translation.md): 2 encoder + 2 decoder layers,
d_model 128, 4 heads of 32, d_ff 512, ReLU, tied embeddings, no dropout (4,000 steps: about four passes).
After training: greedy translations of the held-out books scored with sacrebleu's BLEU and chrF beside the
copy-the-source baseline (summary.json, translations.txt).

Needs:  apt-get install sword-text-kjv sword-text-sparv; pip install pysword sacrebleu
Run:    jaxdl train configs/bible_t5.py
Smoke:  jaxdl train configs/bible_t5.py:smoke
"""

from jaxdl.config import Config, DataConfig, OptimConfig, TrainConfig, model_config, variant


def get_config(name: str | None = None) -> Config:
    cfg = Config(
        name="bible_t5",
        seed=0,
        task="seq2seq",
        model=model_config("t5", d_model=128, d_kv=32, d_ff=512, num_layers=2, num_heads=4, dropout=0.0),
        data=DataConfig(name="bible_en_es", tokenizer="bpe", vocab_size=8000, max_source_len=64,
                        max_target_len=64),
        optim=OptimConfig(name="adamw", lr=2e-3, schedule="warmup_cosine", warmup_steps=150, weight_decay=0.01,
                          clip_norm=1.0),
        train=TrainConfig(batch_size=32, steps=4000, eval_every=500, driver="host", eval_batch_size=128),
    )
    return variant(cfg, name,
                   smoke={"model.d_model": 32, "model.d_kv": 8, "model.d_ff": 64, "model.num_layers": 1,
                          "model.num_heads": 2, "data.vocab_size": 1000, "data.max_source_len": 48,
                          "data.max_target_len": 48, "data.train_limit": 200, "data.eval_limit": 8,
                          "train.batch_size": 8, "train.steps": 6, "train.eval_every": 3, "train.eval_batch_size": 8,
                          "train.progress": False})
