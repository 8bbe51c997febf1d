"""The finetuning optimizer of MERLOT Reserve (spec §7): weight decay toward the pretrained
weights on large matrices only, and the engine starting the optimizer from `init_from`."""
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from trainer.optim import add_decay_toward_init, make_optimizer


def test_decay_toward_init_hand_computed():
    p0 = {'big': jnp.full((64, 65), 2.0), 'small': jnp.full((4, 4), 2.0), 'bias': jnp.ones(5)}
    tx = add_decay_toward_init(0.1, min_size=4096, anchor_dtype=jnp.float32)
    state = tx.init(p0)
    params = {'big': jnp.full((64, 65), 3.0), 'small': jnp.full((4, 4), 3.0),
              'bias': jnp.full(5, 4.0)}
    grads = {k: jnp.zeros_like(v) for k, v in params.items()}
    updates, _ = tx.update(grads, state, params)
    np.testing.assert_allclose(updates['big'], 0.1 * (3.0 - 2.0))     # 4160 > 4096 entries
    np.testing.assert_array_equal(updates['small'], 0.0)
    np.testing.assert_array_equal(updates['bias'], 0.0)


def test_make_optimizer_decays_toward_init_not_zero():
    cfg = ml_collections.ConfigDict(dict(
        lr=0.5, b1=0.9, b2=0.98, eps=1e-6, weight_decay=0.1, warmup_steps=0, decay='constant',
        final_lr_frac=0.0, clip_norm=0.0, mu_dtype='float32', bias_correction=True,
        decay_to_init=True, decay_min_size=0))
    tx, _ = make_optimizer(cfg, 10)
    p0 = {'w': jnp.full((2, 2), 1.0)}
    state = tx.init(p0)
    zero = {'w': jnp.zeros((2, 2))}
    updates, state = tx.update(zero, state, p0)           # at p0: no decay, no gradient
    np.testing.assert_allclose(updates['w'], 0.0)
    moved = {'w': jnp.full((2, 2), 3.0)}
    updates, _ = tx.update(zero, state, moved)
    # anchor kept in bf16 (1.0 exactly); step = -lr * wd * (p - p0)
    np.testing.assert_allclose(optax.apply_updates(moved, updates)['w'], 3.0 - 0.5 * 0.1 * 2.0,
                               rtol=1e-6)
