"""MERLOT Reserve finetuning on VCR, Q->A and QA->R in one pass (spec §7.2).

  --config configs/mreserve/vcr.py:variant=tiny    tiny model on the learnable synthetic corpus
  --config configs/mreserve/vcr.py:variant=base    the README's run: data.source=tfds,
                                                   data.tfds_dir (VcrAnnotations prepared from
                                                   the VCR release), data.tokenizer, init_from
"""
from configs.mreserve.tvqa import epochs_to_steps, finetune_base


def get_config(arg=None):
    c, tiny, _ = finetune_base(arg, 'vcr')
    c.data.source = 'synthetic' if tiny else 'tfds'
    c.data.num_segments = 1
    c.data.lang_seq_len = 24 if tiny else 144
    c.data.max_option_len = 23 if tiny else 143
    c.data.flip_prob = 0.5          # choose the left-right flipped render (when there is one)
    # base, lr 1e-5, 5 epochs of 212,736 questions (spec §7.2)
    c.optim.lr = 1e-3 if tiny else 1e-5
    epochs_to_steps(c, tiny, 212_736, 5, 60)
    return c
