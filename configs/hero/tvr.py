"""HERO fine-tuning on TVR (video corpus moment retrieval, spec §4.1, `train-tvr-8gpu.json`).

  --config configs/hero/tvr.py:variant=tiny   tiny model on the learnable synthetic corpus
  --config configs/hero/tvr.py:variant=base   full size; set data.source=files and the paths

`finetune_base` also builds configs/hero/tvqa.py and violin.py. `init_from` names a pretrained
HERO params directory (a trainer.export of pretraining or a converted original checkpoint);
hero.finetune merges it into the downstream model (hero/load_pretrained.py).
"""
import ml_collections

from configs.common import base_config, parse_arg
from configs.hero.pretrain import MODEL_VARIANTS


def finetune_base(arg, task: str):
    arg = parse_arg(arg, variant='tiny', scan_layers=False, remat_policy='none')
    if arg.variant not in MODEL_VARIANTS:
        raise ValueError(f'unknown variant {arg.variant!r}; known: {sorted(MODEL_VARIANTS)}')
    tiny = arg.variant == 'tiny'
    c = base_config()
    c.seed = 77
    c.task = f'hero.finetune_tasks:build_{task}_task'
    model = dict(MODEL_VARIANTS[arg.variant])
    if not tiny:
        model['lm_vocab_size'] = 0       # hero_finetune.json: vocab 50272 throughout
    c.model = ml_collections.ConfigDict(dict(
        **model, type_vocab_size=2, fom_num_classes=100, hidden_dropout=0.1,
        attention_dropout=0.1, initializer_range=0.02, scan_layers=arg.scan_layers,
        remat_policy=arg.remat_policy))

    c.data = ml_collections.ConfigDict()
    c.data.source = 'synthetic' if tiny else 'files'     # synthetic | files | store
    c.data.store = ''               # HERO feature store directory (source=store)
    c.data.store_split = 'train'
    c.data.train_annotations = ''
    c.data.val_annotations = ''
    c.data.test_annotations = ''
    c.data.subtitles = ''           # jsonl: vid_name, sub [{text, start, end}]
    c.data.video_dir = ''           # DIR/{vid_name}.npz with `features` (n, vfeat)
    c.data.tokenizer = ''           # RoBERTa tokenizers JSON
    c.data.frame_interval = 1.5
    c.data.max_clip_len = 12 if tiny else 100
    c.data.max_txt_len = 7 if tiny else 60
    c.data.max_qa_len = 8 if tiny else 120
    c.data.subs_per_video = 6 if tiny else 48
    c.data.frames_per_sub = 4 if tiny else 16
    c.data.synthetic_seed = 0
    c.data.synthetic_videos = 8
    c.data.synthetic_items = 32

    c.optim.b1 = 0.9
    c.optim.b2 = 0.98
    c.optim.eps = 1e-6
    c.optim.weight_decay = 0.01
    c.optim.decay = 'linear'
    c.optim.final_lr_frac = 0.0
    c.optim.clip_norm = 1.0
    c.optim.schedule_offset = 1
    c.train.accumulate = 'sum'
    c.train.eval_every = 0
    c.train.ckpt_every = 50 if tiny else 500
    return c, tiny


def get_config(arg=None):
    c, tiny = finetune_base(arg, 'tvr')
    # lw 0.01 / 8 / 8, hard negatives from step 2000, pool 20 x10, drop_svmr 0.8 (spec §4.1)
    c.vsm = ml_collections.ConfigDict(dict(
        lw_st_ed=0.01, lw_neg_ctx=8.0, lw_neg_q=8.0, margin=0.1,
        hard_negative_start_step=20 if tiny else 2000, hard_pool_size=20,
        hard_neg_weight=10.0, easy_neg_weight=0.1, drop_svmr_prob=0.8,
        hinge_grad_scale=1.0 if tiny else 1.0 / 8))
    c.vcmr = ml_collections.ConfigDict(dict(
        alpha=20.0, max_vcmr_video=100, min_pred_len=2, max_pred_len=16, max_before_nms=200,
        max_after_nms=100, nms_thd=0.5))
    c.optim.lr = 1e-3 if tiny else 1e-4
    c.optim.warmup_steps = 5 if tiny else 500
    c.train.steps = 60 if tiny else 5000
    c.train.global_batch = 8 if tiny else 512     # queries per update (32 x 8 GPUs x 2)
    c.train.micro_batches = 1 if tiny else 2
    return c
