"""Pretraining checkpoint -> export -> finetuning: the downstream tree takes every pretrained
parameter it has (the new `proj` / `classifier` stay fresh, `head` / `span_encoder` are left
out), the optimizer decays toward the loaded weights, and the zero-shot API loads the export.
The slow test runs the entry points end to end (pretrain, export, finetune, evaluate)."""
import json
import os

import flax.linen as nn
import jax
import numpy as np
import pytest
from engine_utils import run_module
from mreserve_finetune_utils import tiny_config

from configs.mreserve import pretrain
from mreserve import finetune, finetune_tasks
from mreserve.model_config import ModelConfig
from mreserve.params import init_params
from mreserve.zero_shot import PretrainedMerlotReserve
from trainer import params_io
from trainer.state import init_batch


def _pretrained_export(path, seed=3):
    config = pretrain.get_config('variant=tiny')
    params = jax.jit(lambda r: init_params(ModelConfig.from_config(config), r))(
        jax.random.key(seed))
    params = jax.tree.map(np.asarray, nn.meta.unbox(params))
    params_io.save_params(str(path), params, json.loads(config.to_json_best_effort()))
    return params


@pytest.mark.parametrize('name', ['tvqa', 'vcr', pytest.param('kinetics', marks=pytest.mark.slow)])
def test_merge_takes_every_pretrained_parameter(tmp_path, name):
    pretrained = _pretrained_export(tmp_path / 'export')
    config = tiny_config(name)
    config.init_from = str(tmp_path / 'export')
    task = finetune_tasks.build_task(config, finetune_tasks.kind_of(config))
    merged_dir = finetune.prepare_init_from(config, str(tmp_path / 'run'), task)
    assert merged_dir == str(tmp_path / 'run' / finetune.MERGED_DIR)
    merged = params_io.load_params(merged_dir)
    new_head = 'classifier' if name == 'kinetics' else 'proj'
    expected = {'vision_encoder', 'token_encoder', 'joint_transformer', 'contrastive_scales',
                new_head} | ({'audio_encoder'} if name != 'vcr' else set())
    assert set(merged) == expected
    for tower in expected - {new_head}:
        for a, b in zip(jax.tree.leaves(merged[tower]), jax.tree.leaves(pretrained[tower])):
            np.testing.assert_array_equal(a, b)
    # the fresh tree of the task has the same structure and shapes (loads into the engine)
    fresh = jax.eval_shape(lambda r: task.init(r, init_batch(task)), jax.random.key(0))
    params_io.check_shapes(nn.meta.unbox(fresh), merged)


@pytest.mark.slow   # the default run loads an export in test_mreserve_zero_shot_qa.py
def test_zero_shot_api_loads_an_export(tmp_path, shared_dir):
    pretrained = _pretrained_export(tmp_path / 'export')
    model = PretrainedMerlotReserve.from_converted(
        str(tmp_path / 'export'),
        tokenizer=str(shared_dir / 'tokenizers' / 'mreserve_lowercase_bpe.json'))
    labels = np.asarray(model.get_label_space(['archery', 'making coffee']))
    assert labels.shape == (2, 64)
    np.testing.assert_allclose(np.linalg.norm(labels, axis=-1), 1.0, atol=1e-3)
    np.testing.assert_array_equal(np.asarray(model.params['head']['kernel']),
                                  pretrained['head']['kernel'])


@pytest.mark.slow
def test_pretrain_export_finetune_evaluate_entry_points(tmp_path):
    pre = str(tmp_path / 'pretrain')
    run_module('mreserve.train', ['--config', 'configs/mreserve/pretrain.py:variant=tiny',
                                  '--workdir', pre, '--config.demo.enabled=False',
                                  '--config.train.steps=2', '--config.train.global_batch=2',
                                  '--config.optim.warmup_steps=1', '--config.mesh.data=1',
                                  '--config.train.async_ckpt=False'], devices=1, timeout=600)
    export = str(tmp_path / 'export')
    run_module('trainer.export', ['--workdir', pre, '--out', export, '--dtype', 'bfloat16'],
               devices=1)
    run = str(tmp_path / 'tvqa')
    common = ['--config', 'configs/mreserve/tvqa.py:variant=tiny',
              '--config.data.synthetic_examples=8']
    run_module('mreserve.finetune', [*common, '--workdir', run, f'--config.init_from={export}',
                                     '--config.train.steps=2', '--config.optim.warmup_steps=1',
                                     '--config.train.global_batch=2', '--config.mesh.data=1',
                                     '--config.train.async_ckpt=False'], devices=1, timeout=600)
    assert os.path.isdir(os.path.join(run, finetune.MERGED_DIR, 'params'))
    run_module('mreserve.evaluate', [*common, '--checkpoint', run], devices=1, timeout=600)
    with open(os.path.join(run, 'metrics_val_step2.json')) as f:
        metrics = json.load(f)
    assert metrics['num_examples'] == 8 and 0.0 <= metrics['accuracy'] <= 100.0
