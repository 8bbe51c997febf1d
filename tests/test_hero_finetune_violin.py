"""VIOLIN fine-tuning: statement pairs of opposite labels; the tiny model learns whether the
statement's word names the video's class and is evaluated end to end (chance 50 %)."""
import json
import os

import pytest
from engine_utils import run_module
from hero_finetune_utils import FAST_COMPILE, fast_finetune, tiny_config, write_files_dataset

from hero import downstream_data, evaluate, finetune_data


def test_violin_batches_pair_opposite_labels():
    config = tiny_config('violin')
    videos, items = finetune_data.load_split(config, 'violin', 'train')
    batch = downstream_data.violin_batch(videos, items[:3], downstream_data.Sizes.from_config(
        config.data))
    assert batch['labels'].shape == (3, 2) and (batch['labels'].sum(1) == 1).all()
    assert batch['sub_ids'].shape[:2] == (3, 2) and batch['txt_ids'].shape[:2] == (3, 2)
    # the statement is appended to every subtitle: [SEP] sub [SEP] statement
    row = batch['sub_ids'][0, 0, 0][batch['sub_mask'][0, 0, 0] > 0]
    assert row[0] == 2 and row[-2] == 2 and row[-1] == items[0].statements[0][0]


def test_violin_few_steps_then_evaluate():
    config = tiny_config('violin')
    params, metrics = fast_finetune(config, 'violin', steps=2)
    assert metrics['violin_loss'] > 0
    out = evaluate.evaluate(config, params, 'val', FAST_COMPILE)
    assert out['num_examples'] == 2 * config.data.synthetic_items
    assert 0.0 <= out['violin_accuracy'] <= 100.0


@pytest.mark.slow
def test_violin_finetune_beats_chance():
    config = tiny_config('violin')
    params, _ = fast_finetune(config, 'violin', steps=100)
    out = evaluate.evaluate(config, params, 'val', FAST_COMPILE)
    print('VIOLIN accuracy', out, 'chance 50.0')
    assert out['violin_accuracy'] >= 70.0


@pytest.mark.slow
def test_entry_points_on_files(tmp_path):
    overrides = [f'--config.data.{k}={v}'
                 for k, v in write_files_dataset(tmp_path / 'data', 'violin').items()]
    workdir = str(tmp_path / 'run')
    run_module('hero.finetune', ['--config', 'configs/hero/violin.py:variant=tiny',
                                 '--workdir', workdir, '--config.train.steps=3',
                                 '--config.optim.warmup_steps=1', '--config.mesh.data=1',
                                 '--config.train.async_ckpt=False', *overrides], devices=1)
    run_module('hero.evaluate', ['--config', 'configs/hero/violin.py:variant=tiny',
                                 '--checkpoint', workdir, *overrides], devices=1)
    with open(os.path.join(workdir, 'metrics_val_step3.json')) as f:
        assert json.load(f)['num_examples'] == 16
