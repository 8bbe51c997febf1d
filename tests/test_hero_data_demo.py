"""`python -m hero.train --config configs/hero/pretrain.py:variant=tiny` without data flags:
the cached demo store and the losses of all four tasks falling (slow: ~3 min on 2 cores)."""
import json

import numpy as np
import pytest


@pytest.mark.slow
def test_tiny_demo_run_losses_fall_for_all_tasks(tmp_path):
    from configs.hero.pretrain import get_config
    from hero.task import build_task
    from trainer.loop import train
    config = get_config('variant=tiny')
    config.data.demo_dir = str(tmp_path / 'cache')
    config.train.log_every = 1
    import jax
    result = train(config, str(tmp_path / 'work'), build_task(config), jax.devices()[:1])
    assert result['final_step'] == config.train.steps
    rows = [json.loads(line) for line in open(tmp_path / 'work' / 'metrics.jsonl')]
    for key in ('mlm_loss', 'mfm_nce_loss', 'fom_loss', 'vsm_loss'):
        values = [r[key] for r in rows if key in r]
        k = len(values) // 5
        first, last = np.mean(values[:k]), np.mean(values[-k:])
        print(f'{key}: {len(values)} steps, first 20% {first:.3f}, last 20% {last:.3f}')
        assert last < first, key
