"""MERLOT Reserve finetuning on TVQA (spec §7.1, `finetune/tvqa/*`).

  --config configs/mreserve/tvqa.py:variant=tiny    tiny model on the learnable synthetic corpus
  --config configs/mreserve/tvqa.py:variant=large   the original's run: set data.source=records,
                                                    data.{train,val}_records, data.tokenizer and
                                                    init_from (a pretraining export or workdir)

`finetune_base` also builds configs/mreserve/vcr.py and kinetics.py. Optimizer (spec §7):
bf16-moment Adam with bias correction, b2 0.98, eps 1e-6, weight decay 0.1 toward the
pretrained weights on matrices of more than 4096 entries, linear warmup over half an epoch
then linear decay to 0. The original has no per-parameter-group learning rates.
"""
import ml_collections

from configs import common
from configs.mreserve.pretrain import _MODEL


def finetune_base(arg, task: str, **extra_args):
    args = common.parse_arg(arg, variant='tiny', scan_layers=False, remat='none', **extra_args)
    if args.variant not in _MODEL:
        raise ValueError(f'unknown variant {args.variant!r}; known: {sorted(_MODEL)}')
    tiny = args.variant == 'tiny'
    c = common.base_config()
    c.seed = 1
    c.task = f'mreserve.finetune_tasks:build_{task}_task'
    c.variant = args.variant
    model = dict(_MODEL[args.variant])
    if not tiny:
        model['output_grid'] = (18, 32)      # the *_resadapt grid used for finetuning
    c.model = ml_collections.ConfigDict(dict(
        model, vit_patch_size=16, vit_pooling_ratio=2, audio_seq_length=60, audio_patch_size=2,
        audio_token_length=6, text_span_length=15, vocab_size=32768, param_dtype='float32',
        scan_layers=args.scan_layers, remat=args.remat))
    c.data = ml_collections.ConfigDict(dict(
        source='synthetic' if tiny else 'records',
        train_records='', val_records='', test_records='',   # TVQA TFRecord glob patterns
        tfds_dir='',                   # VCR / Kinetics: TFDS data_dir of the prepared builder
        tokenizer='',                  # BPE json: ids of "answer: " / "rationale: "
        num_segments=7, lang_seq_len=256, max_option_len=255,
        synthetic_seed=0, synthetic_classes=5, synthetic_examples=64))

    c.optim.b1 = 0.9
    c.optim.b2 = 0.98
    c.optim.eps = 1e-6
    c.optim.bias_correction = True
    c.optim.weight_decay = 0.1
    c.optim.decay_to_init = True       # decay toward the pretrained weights: wd * (p - p0)
    c.optim.decay_min_size = 4096      # ... on matrices with more than this many entries
    c.optim.decay = 'linear'
    c.optim.final_lr_frac = 0.0
    c.optim.clip_norm = 0.0
    c.optim.mu_dtype = 'float32' if tiny else 'bfloat16'
    c.train.dtype = 'float32' if tiny else 'bfloat16'
    c.train.global_batch = 4 if tiny else 32
    c.train.eval_every = 0
    c.train.log_every = 10 if tiny else 50
    return c, tiny, args


def epochs_to_steps(c, tiny: bool, train_size: int, epochs: float, tiny_steps: int):
    """Steps and half-epoch warmup of the original schedule (tiny: fixed small numbers)."""
    per_epoch = train_size // c.train.global_batch
    c.train.steps = tiny_steps if tiny else int(epochs * per_epoch)
    c.optim.warmup_steps = 5 if tiny else per_epoch // 2
    c.train.ckpt_every = 50 if tiny else per_epoch


def get_config(arg=None):
    c, tiny, _ = finetune_base(arg, 'tvqa')
    # large, lr 5e-6, 3 epochs of 122,112 questions (spec §7.1); 256 text/audio positions
    c.optim.lr = 1e-3 if tiny else 5e-6
    epochs_to_steps(c, tiny, 122_112, 3, 60)
    if tiny:
        c.data.lang_seq_len = 7 * 18 + 24
        c.data.max_option_len = 23
    return c
