"""MERLOT Reserve model structure: parameter counts, init, logical axes, scanned/remat layouts,
and the converter's error messages. No shared assets needed except where noted."""
import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs.common import DEFAULT_RULES
from configs.mreserve.pretrain import get_config
from mreserve.convert import NotACheckpointError, convert
from mreserve.layers import (
    TransformerEncoder,
    apply_rotary,
    kernel_init,
    rotary_coords_1d,
    rotary_coords_2d,
    rotary_sinusoids,
)
from mreserve.model_config import ModelConfig
from mreserve.params import (
    abstract_params,
    init_params,
    param_count,
    to_scanned,
    to_unscanned,
)


def variant(name, **overrides) -> ModelConfig:
    return ModelConfig.from_config(get_config(f'variant={name}')).replace(**overrides)


@functools.lru_cache
def random_params(config: ModelConfig, seed: int):
    """Unboxed random-init params (jitted: eager init is slow on a busy 2-core machine)."""
    return nn.unbox(jax.jit(functools.partial(init_params, config))(jax.random.key(seed)))


@pytest.mark.parametrize('name,millions', [('base', 316.4), ('large', 853.1)])
def test_param_count_full_size(name, millions):
    count = param_count(abstract_params(variant(name)))
    print(f'{name}: {count:,} parameters')
    assert abs(count / 1e6 - millions) / millions < 1e-3


def test_param_count_tiny_and_tree():
    params = abstract_params(variant('tiny'))
    assert param_count(params) == 2_455_171
    assert len(jax.tree.leaves(params)) == 99
    assert sorted(params) == ['audio_encoder', 'contrastive_scales', 'head',
                              'joint_transformer', 'span_encoder', 'token_encoder',
                              'vision_encoder']
    layer = params['joint_transformer']['layer_01']['attention_layer']
    assert layer['qkv']['kernel'].shape == (64, 6, 32)
    assert 'bias' not in layer['attn_proj']
    assert 'bias' not in params['joint_transformer']['layer_00']['mlp_layer']['out']
    assert params['token_encoder']['Embed_0']['embedding'].shape == (32768, 64)


def test_every_param_has_known_logical_axes():
    known = {name for name, _ in DEFAULT_RULES}
    for scan in (False, True):
        boxed = jax.eval_shape(functools.partial(init_params, variant('tiny', scan_layers=scan)),
                               jax.random.key(0))
        leaves = jax.tree.leaves(boxed, is_leaf=lambda x: isinstance(x, nn.Partitioned))
        for leaf in leaves:
            assert isinstance(leaf, nn.Partitioned), leaf
            assert len(leaf.names) == leaf.value.ndim and set(leaf.names) <= known, leaf.names
            assert not scan or leaf.names[0] != 'layers' or leaf.value.shape[0] in (1, 2)


def test_kernel_init_std():
    """Spec §1.1: truncated normal on [-2, 2] (std 0.8796 of the unit normal) times
    min(18 / in_size, 0.02) / sqrt(2); 3-D kernels with shape[0] < shape[2] use shape[0]*[1]."""
    unit_std = 0.87962566
    for shape, in_size in (((768, 3072), 768), ((3072, 768), 3072), ((2, 65, 768), 130),
                           ((1024, 4096), 1024)):
        x = np.asarray(kernel_init(jax.random.key(0), shape))
        expected = min(18 / in_size, 0.02) / math.sqrt(2) * unit_std
        assert abs(x.std() / expected - 1) < 0.02, (shape, x.std(), expected)
        assert np.abs(x).max() <= 2 * min(18 / in_size, 0.02) / math.sqrt(2) + 1e-7


def test_rotary_is_the_original_elementwise_scaling():
    """Spec §1.2: pair (2i, 2i+1) -> x[2i](sin - cos), x[2i+1](sin + cos) on the first 32
    dims of each head, dims 32.. untouched; the CLS (all-zero coords) negates even dims."""
    coords = jax.random.normal(jax.random.key(0), (1, 5, 4))
    x = jax.random.normal(jax.random.key(1), (1, 5, 3, 64))
    out = np.asarray(apply_rotary(x, rotary_sinusoids(coords)))
    freqs = 2.0 ** np.linspace(0, np.log2(5), 4)
    theta = (np.asarray(coords)[..., None] * freqs * np.pi).reshape(1, 5, 16)[:, :, None]
    x = np.asarray(x)
    np.testing.assert_allclose(out[..., 0:32:2], x[..., 0:32:2] * (np.sin(theta) - np.cos(theta)),
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out[..., 1:32:2], x[..., 1:32:2] * (np.sin(theta) + np.cos(theta)),
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(out[..., 32:], x[..., 32:])
    cls = np.asarray(apply_rotary(x, rotary_sinusoids(jnp.zeros((1, 5, 4)))))
    np.testing.assert_allclose(cls[..., 0:32:2], -x[..., 0:32:2])
    np.testing.assert_allclose(rotary_coords_1d(6), [-3, -2, -1, 1, 2, 3])
    np.testing.assert_allclose(rotary_coords_2d(2, 3)[:3], np.array(
        [[-1, -1], [-1, 1], [-1, 2]]) / 4)


def test_initial_values_in_the_model():
    """Tower kernels use the spec init, the pooling MHA flax's lecun-normal (fan-in H), the
    token table N(0, 0.02), biases 0, LayerNorm scales 1, contrastive_scales 1."""
    params = random_params(variant('tiny'), 0)
    tower_std = 0.02 / math.sqrt(2) * 0.87962566
    layer = params['joint_transformer']['layer_00']
    for kernel in (layer['attention_layer']['qkv']['kernel'],
                   layer['attention_layer']['attn_proj']['kernel'],
                   layer['mlp_layer']['intermediate']['kernel']):
        assert abs(float(np.std(kernel)) / tower_std - 1) < 0.05
    pool = params['vision_encoder']['seq_attnpool']
    for name in ('query', 'key', 'value', 'out'):
        assert abs(float(np.std(pool[name]['kernel'])) * 8 - 1) < 0.05, name
        assert not np.any(pool[name]['bias'])
    assert abs(float(np.std(params['token_encoder']['Embed_0']['embedding'])) / 0.02 - 1) < 0.01
    np.testing.assert_array_equal(params['contrastive_scales'], np.ones(3))
    np.testing.assert_array_equal(layer['pre_attn_ln']['scale'], np.ones(64))


def test_scan_layout_roundtrip():
    params = jax.tree.map(np.asarray, random_params(variant('tiny'), 0))
    scanned = to_scanned(params)
    assert scanned['joint_transformer']['layers']['mlp_layer']['out']['kernel'].shape == (
        2, 256, 64)
    assert 'layer_00' not in scanned['vision_encoder']['transformer']
    jax.tree.map(np.testing.assert_array_equal, to_unscanned(scanned), params)


def test_scan_and_remat_give_the_same_values_and_gradients():
    """TransformerEncoder alone (cheap to compile); the full model in the scanned layout is
    checked against the reference vectors in test_mreserve_reference.py."""
    x = jax.random.normal(jax.random.key(0), (2, 7, 64))
    coords = jax.random.normal(jax.random.key(1), (1, 7, 4))
    mask = jnp.tril(jnp.ones((2, 7, 7), bool))

    def encoder(scan, remat):
        return TransformerEncoder(64, 32, num_layers=2, scan_layers=scan, remat=remat)

    params = encoder(False, 'none').init(jax.random.key(2), x, coords, mask)['params']
    params = jax.tree.map(np.asarray, nn.unbox(params))

    def value_and_grad(scan, remat):
        module = encoder(scan, remat)
        p = to_scanned(params) if scan else params
        f = lambda p, x: jnp.sum(module.apply({'params': p}, x, coords, mask)['seq'] ** 2)
        value, grad = jax.jit(jax.value_and_grad(f, argnums=1))(p, x)
        return value, grad

    ref_value, ref_grad = value_and_grad(False, 'none')
    for scan, remat in ((True, 'dots_saveable'), (False, 'full')):
        value, grad = value_and_grad(scan, remat)
        np.testing.assert_allclose(value, ref_value, rtol=1e-5)
        np.testing.assert_allclose(grad, ref_grad, rtol=1e-4, atol=1e-6)


@pytest.fixture(scope='module')
def reference_checkpoint(shared_dir):
    path = shared_dir / 'reference' / 'mreserve' / 'checkpoint.msgpack'
    if not path.is_file():
        pytest.skip('../shared/reference/mreserve is not present')
    return path


def test_convert_wrong_variant_names_path_and_shapes(reference_checkpoint, tmp_path):
    with pytest.raises(ValueError) as error:
        convert(str(reference_checkpoint), str(tmp_path / 'out'), variant='base')
    message = str(error.value)
    assert "'audio_encoder/embedding/bias'" in message
    assert '(64,)' in message and '(768,)' in message and "'base'" in message
    assert not (tmp_path / 'out').exists()


def test_convert_rejects_non_checkpoints(tmp_path):
    text = tmp_path / 'notes.txt'
    text.write_text('this is not a checkpoint\n')
    with pytest.raises(NotACheckpointError, match='not a MERLOT Reserve checkpoint'):
        convert(str(text), str(tmp_path / 'a'), variant='tiny')
    from flax import serialization
    other = tmp_path / 'other.msgpack'
    other.write_bytes(serialization.msgpack_serialize({'weights': np.zeros(3, np.float32)}))
    with pytest.raises(NotACheckpointError, match="'params'"):
        convert(str(other), str(tmp_path / 'b'), variant='tiny')
