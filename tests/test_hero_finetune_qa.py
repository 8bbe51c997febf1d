"""TVQA-style video QA fine-tuning: the tiny model learns which candidate answer names the
video's class (encoded in the frame features) and is evaluated end to end; the temporal head
starts as a copy of the answer pool; the slow test runs the entry points on released-format
files."""
import json
import os

import jax
import numpy as np
import pytest
from engine_utils import run_module
from hero_finetune_utils import FAST_COMPILE, fast_finetune, tiny_config, write_files_dataset

from hero import evaluate, finetune_tasks


def test_qa_heads_init_and_shapes():
    config = tiny_config('tvqa')
    ds = finetune_tasks.make_downstream(config, 'tvqa')
    params = jax.tree.map(np.asarray, ds.init(jax.random.key(0)))
    params = jax.tree.map(lambda x: getattr(x, 'value', x), params,
                          is_leaf=lambda x: hasattr(x, 'value'))
    np.testing.assert_array_equal(params['st_ed_pool']['kernel'], params['qa_pool']['kernel'])
    assert set(params) == {'v_encoder', 'qa_pool', 'qa_pred_head', 'st_ed_pool',
                           'st_ed_pred_head'}
    assert params['qa_pred_head']['linear_2']['kernel'].shape == (2 * 64, 1)
    assert params['st_ed_pred_head']['linear_2']['kernel'].shape == (2 * 64, 2)


def test_qa_few_steps_then_evaluate():
    config = tiny_config('tvqa')
    params, metrics = fast_finetune(config, 'tvqa', steps=2)
    assert np.isfinite(metrics['qa_temporal_loss']) and np.isfinite(metrics['qa_loss'])
    out = evaluate.evaluate(config, params, 'val', FAST_COMPILE)
    assert out['num_examples'] == config.data.synthetic_items
    assert 0.0 <= out['qa_accuracy'] <= 100.0


@pytest.mark.slow
def test_qa_finetune_beats_chance():
    config = tiny_config('tvqa')
    params, _ = fast_finetune(config, 'tvqa', steps=70)
    out = evaluate.evaluate(config, params, 'val', FAST_COMPILE)
    print('QA accuracy', out, 'chance 20.0')
    assert out['qa_accuracy'] >= 40.0


@pytest.mark.slow
def test_entry_points_on_files(tmp_path):
    overrides = [f'--config.data.{k}={v}'
                 for k, v in write_files_dataset(tmp_path / 'data', 'tvqa').items()]
    workdir = str(tmp_path / 'run')
    run_module('hero.finetune', ['--config', 'configs/hero/tvqa.py:variant=tiny', '--workdir',
                                 workdir, '--config.train.steps=3',
                                 '--config.optim.warmup_steps=1', '--config.mesh.data=1',
                                 '--config.train.async_ckpt=False', *overrides], devices=1)
    run_module('hero.evaluate', ['--config', 'configs/hero/tvqa.py:variant=tiny',
                                 '--checkpoint', workdir, *overrides], devices=1)
    with open(os.path.join(workdir, 'metrics_val_step3.json')) as f:
        metrics = json.load(f)
    assert metrics['num_examples'] == 8 and 0.0 <= metrics['qa_accuracy'] <= 100.0
