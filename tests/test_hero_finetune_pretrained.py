"""Starting downstream models from pretrained HERO parameters: the shared encoder is copied,
new heads keep their fresh init (hero/load_pretrained.py); the slow test exports a few steps
of HERO pretraining (trainer.loop.train + trainer.export) and fine-tunes QA and TVR from it."""
import os

import flax.linen as nn
import jax
import numpy as np
import pytest
from hero_finetune_utils import FAST_COMPILE, tiny_config

from hero import finetune_tasks
from hero.load_pretrained import MERGED_DIR, merge_pretrained, prepare_init_from
from trainer import params_io


def assert_subtree_equal(part, full):
    """Every leaf of `part` equals the leaf at the same path of `full`."""
    for path, leaf in jax.tree_util.tree_flatten_with_path(part)[0]:
        other = full
        for key in path:
            other = other[key.key]
        np.testing.assert_array_equal(leaf, other)


def host_init(config, kind, seed):
    ds = finetune_tasks.make_downstream(config, kind)
    init = jax.jit(ds.init, compiler_options=FAST_COMPILE)
    return jax.tree.map(np.asarray, nn.meta.unbox(init(jax.random.key(seed))))


def test_merge_copies_encoder_and_keeps_new_heads():
    pretrained = host_init(tiny_config('tvr'), 'tvr', 1)        # the pretraining tree
    fresh = host_init(tiny_config('violin'), 'violin', 2)
    merged, report = merge_pretrained(fresh, pretrained)
    for part in ('f_encoder', 'frame_transform', 'c_encoder'):
        assert_subtree_equal(merged['v_encoder'][part], pretrained['v_encoder'][part])
    for head in ('violin_pool', 'violin_pred_head'):
        jax.tree.map(np.testing.assert_array_equal, merged[head], fresh[head])
    assert {k.split('/')[0] for k in report['kept_fresh']} == {'violin_pool',
                                                                'violin_pred_head'}
    assert any(k.startswith('q_feat_attn/') for k in report['unused'])
    assert any(k.startswith('v_encoder/fom_output/') for k in report['unused'])
    # the VCMR model is the pretraining model: everything is copied
    _, same = merge_pretrained(pretrained, pretrained)
    assert not same['kept_fresh'] and not same['unused']


def test_merge_rejects_a_different_model_size():
    fresh = host_init(tiny_config('violin'), 'violin', 0)
    pretrained = {'v_encoder': {'frame_transform': {'net_1': {'kernel': np.zeros((3, 3))}}}}
    with pytest.raises(ValueError, match='frame_transform/net_1/kernel'):
        merge_pretrained(fresh, pretrained)


@pytest.mark.slow
def test_export_of_pretraining_then_finetune(tmp_path):
    from configs.hero.pretrain import get_config as pretrain_config
    from hero.task import build_task as build_pretrain_task
    from trainer.export import export
    from trainer.loop import build_task_from_config, train

    devices = jax.devices()[:1]
    pre = pretrain_config('variant=tiny')
    pre.train.steps, pre.train.global_batch, pre.optim.warmup_steps = 2, 2, 1
    pre.train.async_ckpt, pre.mesh.data = False, 1
    train(pre, str(tmp_path / 'pretrain'), build_pretrain_task(pre), devices=devices)
    exported = export(str(tmp_path / 'pretrain'), str(tmp_path / 'export'))
    pretrained = jax.tree.map(np.asarray, params_io.load_params(exported))

    for kind in ('tvqa', 'tvr'):
        config = tiny_config(kind)
        config.train.steps, config.optim.warmup_steps = 2, 1
        config.train.async_ckpt, config.mesh.data = False, 1
        config.init_from = exported
        workdir = str(tmp_path / kind)
        task = build_task_from_config(config)
        config.init_from = prepare_init_from(config, workdir, lambda r, t=task: t.init(r, None))
        assert config.init_from == os.path.join(workdir, MERGED_DIR)
        merged = params_io.load_params(config.init_from)
        assert_subtree_equal(merged['v_encoder'], pretrained['v_encoder'])
        result = train(config, workdir, task, devices=devices)
        assert result['final_step'] == 2
        assert all(np.isfinite(h['loss']) for h in result['history'])
