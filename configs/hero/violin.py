"""HERO fine-tuning on VIOLIN (spec §4.4, `train-violin-8gpu.json`).

  --config configs/hero/violin.py:variant=tiny   tiny model on the learnable synthetic corpus

Not reproduced: `sub_ctx_len 2` (previous subtitles prepended) and the heads' LR x8.
"""
from configs.hero.tvr import finetune_base


def get_config(arg=None):
    c, tiny = finetune_base(arg, 'violin')
    c.optim.lr = 1e-3 if tiny else 3e-5
    c.optim.warmup_steps = 5 if tiny else 600
    c.train.steps = 60 if tiny else 6000
    c.train.global_batch = 4 if tiny else 64      # statement pairs per update (4 x 8 x 2)
    c.train.micro_batches = 1 if tiny else 2
    return c
