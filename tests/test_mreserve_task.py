"""MERLOT Reserve as an engine Task: batch layout shared with the data pipeline's reader,
synthetic batches with the loader's structure, and (slow) a short sharded training run."""
import functools
import math

import jax
import numpy as np
import pytest

from configs.mreserve.pretrain import get_config
from mreserve.model_config import AUDIOSPAN, MASK, MASKAUDIO, ModelConfig
from mreserve.synthetic import batch_shapes, random_batch
from mreserve.task import build_task


@pytest.mark.parametrize('variant', ['tiny', 'base'])
def test_batch_layout_matches_the_reader(variant):
    reader = pytest.importorskip('data_pipeline.mreserve_reader')
    config = get_config(f'variant={variant}')
    ours = batch_shapes(ModelConfig.from_config(config), 1)
    theirs = reader.make_batch_spec(config)
    assert sorted(ours) == sorted(theirs)
    for key, (shape, dtype) in theirs.items():
        assert ours[key][0][1:] == tuple(shape) and np.dtype(ours[key][1]) == dtype, key


def test_synthetic_batches_follow_the_loader_rules():
    c = ModelConfig.from_config(get_config('variant=tiny'))
    batch = random_batch(c, seed=0, indices=range(3), step=7)
    for key, (shape, dtype) in batch_shapes(c, 3).items():
        assert batch[key].shape == shape and batch[key].dtype == dtype, key
    n_spans = batch['text_spans'].shape[1]
    for b in range(3):
        for name in ('audio2text', 'audio_text_matching'):
            tok, ptr = batch[name][b].ravel(), batch[f'{name}/audio_ptr'][b].ravel()
            for row in np.unique(ptr[tok == AUDIOSPAN]):
                assert np.sum((tok == AUDIOSPAN) & (ptr == row)) % c.audio_token_length == 0
        masks = np.concatenate([
            batch[f'{name}/text_ptr'][b].ravel()[batch[name][b].ravel() == MASK]
            for name in ('text2audio', 'audio2text', 'random_text')])
        np.testing.assert_array_equal(np.sort(masks), np.arange(n_spans))
        assert np.sum(batch['text2audio'][b] == MASKAUDIO) == c.num_targets
    again = random_batch(c, seed=0, indices=[1], step=7)
    for key in again:
        np.testing.assert_array_equal(again[key][0], batch[key][1])


@pytest.mark.slow
def test_engine_trains_tiny_on_a_sharded_mesh(tmp_path):
    """4 steps on data=4 x fsdp=2; the sharded loss equals the single-device loss."""
    from trainer.loop import train
    config = get_config('variant=tiny,steps=4,batch=8,scan_layers=true,remat=full')
    config.mesh.fsdp = 2
    config.optim.warmup_steps = 1
    config.train.log_every = 1
    task = build_task(config)
    summary = train(config, str(tmp_path), task)
    losses = [h['loss'] for h in summary['history']]
    # At init: 32 frame candidates, 96 / 24 audio candidates, 48 span candidates.
    at_init = math.log(32) + (math.log(96) + math.log(24)) / 2 + math.log(48)
    assert abs(losses[0] - at_init) < 0.1 and all(np.isfinite(losses))

    params = jax.device_get(summary['state'].params)
    batch = next(task.train_batches(0, 0, 1))
    loss = functools.partial(task.loss, rng=jax.random.key(3), step=0)
    single = jax.jit(loss)(params, batch)[0]
    mesh = jax.make_mesh((4, 2, 1), ('data', 'fsdp', 'model'),
                         axis_types=(jax.sharding.AxisType.Auto,) * 3)
    sharding = jax.sharding.NamedSharding(mesh, jax.P(('data', 'fsdp')))
    with jax.set_mesh(mesh):
        sharded = jax.jit(loss)(params, jax.device_put(batch, sharding))[0]
    np.testing.assert_allclose(sharded, single, rtol=1e-5)
