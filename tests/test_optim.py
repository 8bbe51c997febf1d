"""Optimizer from config: schedule shape, matrix-only decay, Adam without bias correction,
bf16 first moment, clipping."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import common
from trainer.errors import ConfigError
from trainer.optim import clip_by_global_norm, make_optimizer, make_schedule


def _optim(**kw):
    c = common.base_config().optim
    c.update(kw)
    return c


def test_warmup_then_cosine_to_final_fraction():
    schedule = make_schedule(_optim(lr=1.0, warmup_steps=10, decay='cosine', final_lr_frac=0.02),
                             110)
    assert float(schedule(0)) == 0.0
    assert float(schedule(5)) == pytest.approx(0.5)
    assert float(schedule(10)) == pytest.approx(1.0)
    assert float(schedule(60)) == pytest.approx(0.02 + 0.98 * 0.5, rel=1e-5)
    assert float(schedule(110)) == pytest.approx(0.02, rel=1e-5)


def test_warmup_then_linear_to_zero():
    schedule = make_schedule(_optim(lr=2.0, warmup_steps=4, decay='linear', final_lr_frac=0.0),
                             14)
    assert [float(schedule(s)) for s in (0, 2, 4, 9, 14)] == pytest.approx([0, 1, 2, 1, 0])


def test_decay_only_matrices_and_no_bias_correction():
    params = {'w': jnp.ones((2, 2)), 'b': jnp.ones((2,))}
    grads = {'w': jnp.full((2, 2), 0.5), 'b': jnp.full((2,), 0.5)}
    tx, _ = make_optimizer(_optim(lr=0.1, b1=0.9, b2=0.98, eps=1e-6, weight_decay=0.1,
                                  decay='constant', bias_correction=False), 10)
    updates, _ = tx.update(grads, tx.init(params), params)
    # Without bias correction the first Adam step is 0.1*g / (sqrt(0.02)*|g| + eps).
    adam = 0.1 * 0.5 / (np.sqrt(0.02 * 0.25) + 1e-6)
    np.testing.assert_allclose(updates['b'], -0.1 * adam, rtol=1e-5)
    np.testing.assert_allclose(updates['w'], -0.1 * (adam + 0.1 * 1.0), rtol=1e-5)


def test_bias_corrected_matches_optax_adamw():
    params = {'w': jnp.arange(6.0).reshape(2, 3)}
    grads = {'w': jnp.linspace(-1, 1, 6).reshape(2, 3)}
    tx, _ = make_optimizer(_optim(lr=0.01, b2=0.98, eps=1e-6, weight_decay=0.01,
                                  decay='constant'), 10)
    ref = optax.adamw(0.01, b2=0.98, eps=1e-6, weight_decay=0.01)
    ours, _ = tx.update(grads, tx.init(params), params)
    theirs, _ = ref.update(grads, ref.init(params), params)
    np.testing.assert_allclose(ours['w'], theirs['w'], rtol=1e-6)


def test_bf16_first_moment_and_clipping():
    params = {'w': jnp.ones((3, 3))}
    tx, _ = make_optimizer(_optim(mu_dtype='bfloat16', clip_norm=1.0, decay='constant'), 10)
    state = tx.init(params)
    mu = [x for x in jax.tree.leaves(state) if getattr(x, 'shape', ()) == (3, 3)][0]
    assert mu.dtype == jnp.bfloat16
    big = {'w': jnp.full((3, 3), 100.0)}
    small = {'w': jnp.full((3, 3), 100.0 / 300.0)}   # norm 1 after clipping
    u_big, _ = tx.update(big, state, params)
    u_small, _ = tx.update(small, state, params)
    np.testing.assert_allclose(u_big['w'], u_small['w'], rtol=1e-5)


def test_clip_matches_optax_and_keeps_its_state():
    rng = np.random.default_rng(0)
    grads = {'a': jnp.asarray(rng.normal(size=(4, 5)), jnp.float32),
             'b': jnp.asarray(rng.normal(size=(7,)), jnp.float32)}
    norm = float(optax.global_norm(grads))
    for max_norm in (norm / 3, norm * 2):        # clipped, untouched
        ours, theirs = clip_by_global_norm(max_norm), optax.clip_by_global_norm(max_norm)
        assert jax.tree.structure(ours.init(grads)) == jax.tree.structure(theirs.init(grads))
        expected = theirs.update(grads, theirs.init(grads))[0]
        actual = ours.update(grads, ours.init(grads))[0]
        jax.tree.map(lambda a, e: np.testing.assert_allclose(a, e, rtol=1e-6), actual, expected)
    assert float(optax.global_norm(actual)) == pytest.approx(norm, rel=1e-6)


def test_bad_decay_name():
    with pytest.raises(ConfigError, match='optim.decay'):
        make_schedule(_optim(decay='cubic'), 10)


def test_schedule_offset_uses_the_incremented_step():
    schedule = make_schedule(_optim(lr=3e-5, warmup_steps=10000, decay='linear',
                                    schedule_offset=1), 100000)
    assert float(schedule(0)) == pytest.approx(3e-9, rel=1e-3)
