"""HERO train-step benchmark, one entry per pretraining task (issue 5).

    python benchmarks/hero_step.py [--repeats 3] [--only tiny,bench] [--tasks mlm,vsm]

Configurations `{tiny,bench}_{task}` for task in mlm, mfm_nce, mfm_reg (MFFR), fom, vsm:
- `tiny`: the tiny variant (configs/hero/pretrain.py: H=64, 2 + 2 layers, vocab 96, 32-d
  features), 8 videos of 12 frames, 6 subtitles x 4 frames x 9 tokens, 5 queries of 9 tokens;
- `bench`: H=768, 12 heads, FFN 3072, f-TRM 2 layers, t-TRM 1 layer, vocab 50272 (LM softmax
  over 50265), 4352-d features; 4 videos x 20 frames, 4 subtitles per video x (5 frames +
  20 tokens), 5 queries of 20 tokens per video (VSM); float32, no dropout change (0.1);
  MLM scores 10 masked positions per subtitle (`mlm.max_predictions`, the masking capped to
  match, as configs/hero/pretrain.py does for base).
Each step runs only its task (config.tasks.names = (task,)) on the batch part that task reads,
in the store reader's per-video layout (MLM examples are the subtitles of each video), with the
task's own corruption (masking, shuffling) done on device as in training.

As benchmarks/mreserve_step.py: every measurement runs in a fresh single-device CPU process;
the float32 2048x2048 matmul peak is timed right before and after every timed step and `mfu` is
the median over steps of model FLOPs / step time / the mean of those two peaks; each
configuration is repeated `--repeats` times and the median of every figure is reported (with
min and max of step time, peak and compile time). `flops_per_example` is the analytic count
(hero/flops.py, forward + backward matmuls per video); `flops_per_example_xla` is XLA's cost
analysis of the compiled step (which also counts element-wise work and the optimizer).
The last line of output is one JSON object: {configuration name: figures}.
"""
from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

TASKS = {'mlm': 'mlm', 'mfm_nce': 'mfm-nce', 'mfm_reg': 'mffr', 'fom': 'fom', 'vsm': 'vsm'}
SIZES = ('tiny', 'bench')


def make_config(name: str):
    from configs.hero.pretrain import get_config, mlm_budget
    size, task = name.split('_', 1)
    if size == 'tiny':
        config = get_config('variant=tiny')
    else:
        config = get_config('variant=base')
        config.model.f_layers, config.model.c_layers = 2, 1
        data = config.data
        data.max_clip_len, data.subs_per_video, data.frames_per_sub = 20, 4, 5
        data.max_txt_len, data.query_per_video = 19, 5        # 20 tokens with [SEP] / [CLS]
        # LM head at 10 of the 20 text positions (19 candidates: the cap binds in 2e-5 of rows)
        config.mlm.max_predictions = mlm_budget(data.max_txt_len, config.mlm.mask_prob)
        config.train.global_batch, config.train.micro_batches = 4, 1
    config.train.dtype = 'float32'
    config.optim.mu_dtype = 'float32'
    config.tasks.names, config.tasks.ratios = (TASKS[task],), (1,)
    config.data.synthetic = True
    config.mesh.data = 1
    return config


def video_part(config, part: str) -> dict:
    """One per-video batch of `part` (hero/task.py layout) from hero/synthetic.py."""
    import numpy as np

    from hero import synthetic
    from hero.config import CLS_ID, HeroConfig
    from hero.task import batch_sizes
    sizes = batch_sizes(config)
    video = synthetic.video_batch(
        0, HeroConfig.from_config_dict(config.model), videos=config.train.global_batch,
        frames=sizes['frames'], subs=sizes['subs_per_video'],
        sub_frames=sizes['frames_per_sub'], txt_len=sizes['txt_len'],
        queries=sizes['queries_per_video'], query_len=sizes['query_len'])
    if part == 'mlm':           # MLM text is [CLS] + subtitle, not [SEP] + subtitle
        txt_ids = video['sub_ids'].copy()
        txt_ids[..., 0] = np.where(video['sub_mask'][..., 0] > 0, CLS_ID, txt_ids[..., 0])
        video = dict(video, txt_ids=txt_ids, txt_mask=video['sub_mask'])
        keys = ('frame_feats', 'frame_mask', 'sub_frames', 'txt_ids', 'txt_mask')
    elif part == 'video':
        keys = ('frame_feats', 'frame_mask', 'sub_ids', 'sub_mask', 'sub_frames')
    else:
        keys = tuple(video)
    return {f'{part}.{k}': video[k] for k in keys}


def single_task(config):
    """build_task of the config, fed with only its task's part (the same batch every step)."""
    from hero.task import PART_OF, build_task
    from trainer.task import BatchSpec
    task = build_task(config)
    batch = video_part(config, PART_OF[config.tasks.names[0]])
    spec = {k: BatchSpec(v.shape, v.dtype) for k, v in batch.items()}
    return dataclasses.replace(task, name=f'hero_{config.tasks.names[0]}', batch_spec=spec,
                               train_batches=lambda *_: itertools.repeat(batch))


def run_one(name: str, iters: int) -> dict:
    """One measurement in this process (the child side)."""
    import jax

    from benchmarks.common import matmul_peak_fn
    from benchmarks.train_step import measure_step
    config = make_config(name)
    return measure_step(config, single_task(config), iters=iters, devices=jax.devices()[:1],
                        warmup=2, peak_fn=matmul_peak_fn())


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--only', default='tiny,bench', help='comma-separated: tiny, bench')
    parser.add_argument('--tasks', default=','.join(TASKS), help=f'comma-separated: {TASKS}')
    parser.add_argument('--repeats', type=int, default=3)
    parser.add_argument('--iters', type=int, default=3)
    parser.add_argument('--child', default='', help=argparse.SUPPRESS)
    args = parser.parse_args()
    from benchmarks.common import emit, run_child
    if args.child:
        emit(run_one(args.child, args.iters))
        return
    from benchmarks.mreserve_step import summarise
    results = {}
    for size, task in itertools.product(args.only.split(','), args.tasks.split(',')):
        if size not in SIZES or task not in TASKS:
            raise SystemExit(f'unknown configuration {size}_{task}')
        name = f'{size}_{task}'
        runs = []
        for i in range(args.repeats):
            runs.append(run_child(__file__, name, args.iters))
            print(f'{name} run {i}: {json.dumps(runs[-1], sort_keys=True)}', flush=True)
        results[name] = summarise(runs)
    emit(results)


if __name__ == '__main__':
    main()
