"""HERO fine-tuning on TVQA / How2QA (spec §4.3, `train-tvqa-8gpu.json`).

  --config configs/hero/tvqa.py:variant=tiny   tiny model on the learnable synthetic corpus

The original multiplies the LR of the new heads by 10 (`lr_mul`); the engine has one LR for
all parameters, so this config uses the base LR everywhere.
"""
from configs.hero.tvr import finetune_base


def get_config(arg=None):
    c, tiny = finetune_base(arg, 'tvqa')
    c.optim.lr = 1e-3 if tiny else 5e-5
    c.optim.warmup_steps = 5 if tiny else 1000
    c.train.steps = 60 if tiny else 10000
    c.train.global_batch = 4 if tiny else 64      # questions per update (4 x 8 GPUs x 2)
    c.train.micro_batches = 1 if tiny else 2
    return c
