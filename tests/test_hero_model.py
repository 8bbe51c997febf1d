"""HERO model structure, conversion and checkpoint tests that need no shared files."""
import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax.traverse_util import flatten_dict

from configs.hero.pretrain import get_config
from hero import convert, masking, synthetic
from hero.checkpoint_io import load_params
from hero.config import HeroConfig
from hero.modeling import VIDEO_KEYS, HeroModel, init_params, param_count

TINY = HeroConfig.from_config_dict(get_config('variant=tiny').model)
# compile time dominates on a small shared CPU machine; the numerics do not need optimisation
FAST_COMPILE = {'xla_backend_optimization_level': 0, 'xla_llvm_disable_expensive_passes': True}


def run_jitted(fn, *args):
    return jax.jit(fn).lower(*args).compile(FAST_COMPILE)(*args)


def shapes(config):
    return nn.meta.unbox(jax.eval_shape(lambda r: init_params(HeroModel(config), r),
                                        jax.random.key(0)))


def to_original(params) -> dict[str, np.ndarray]:
    """Inverse of the converter's naming rule: Flax params -> a PyTorch-layout state dict."""
    out = {}
    for path, value in flatten_dict(params).items():
        parts = []
        for part in path[:-1]:
            head, _, tail = part.rpartition('_')
            parts.extend([head, tail] if tail.isdigit() and head else [part])
        leaf, value = path[-1], np.asarray(value)
        if leaf == 'kernel':
            value = value.transpose(2, 1, 0) if value.ndim == 3 else value.T
        out['.'.join(parts + ['bias' if leaf == 'bias' else 'weight'])] = value
    word = out['v_encoder.f_encoder.embeddings.word_embeddings.weight']
    out['v_encoder.f_encoder.lm_head.decoder.weight'] = word
    out['v_encoder.pad'] = out['v_encoder.f_encoder.pad'] = np.zeros((8, word.shape[1]))
    return out


@pytest.fixture(scope='module')
def tiny_params():
    """N(0, 0.05) parameters of the tiny shapes (running init eagerly is slow on CPU)."""
    rng = np.random.default_rng(0)
    return jax.tree.map(lambda s: rng.normal(0, 0.05, s.shape).astype(np.float32), shapes(TINY))


def test_parameter_counts():
    base = HeroConfig.from_config_dict(get_config('variant=base').model)
    base_count = param_count(shapes(base))
    print(f'\nHERO base parameters: {base_count:,}; tiny: {param_count(shapes(TINY)):,}')
    assert base_count == 121_037_262
    assert param_count(shapes(TINY)) == 290_350
    assert param_count(shapes(dataclasses.replace(base, scan_layers=True))) == 121_037_262


def test_logical_axes_use_only_known_names():
    from configs.common import DEFAULT_RULES
    known = {name for name, _ in DEFAULT_RULES}
    boxed = jax.eval_shape(lambda r: init_params(HeroModel(TINY), r), jax.random.key(0))
    leaves = jax.tree.leaves(boxed, is_leaf=lambda x: isinstance(x, nn.Partitioned))
    assert all(isinstance(x, nn.Partitioned) for x in leaves)
    used = {n for x in leaves for n in x.names if n is not None}
    assert used <= known, used - known
    for x in leaves:     # a mesh axis can shard only one dimension of a tensor
        names = [n for n in x.names if n is not None]
        assert len(names) == len(set(names)), x.names


def test_convert_roundtrip_and_first_mismatch(tiny_params):
    original = to_original(tiny_params)
    converted = convert.convert_original(original, TINY)
    jax.tree.map(np.testing.assert_array_equal, converted, tiny_params)
    first, later = 'v_encoder.f_encoder.encoder.layer.0.intermediate.dense.weight', \
        'v_encoder.f_encoder.pooler.dense.weight'
    assert list(original).index(first) < list(original).index(later)
    original[first] = np.zeros((255, 64), np.float32)
    original[later] = np.zeros((3, 3), np.float32)
    with pytest.raises(convert.ShapeMismatchError) as err:
        convert.convert_original(original, TINY)
    message = str(err.value)
    print('\n' + message)
    assert first in message and '(255, 64)' in message and '(64, 256)' in message, message
    assert 'pooler' not in message


def test_vocab_rows_padded_to_multiple_of_eight(tiny_params):
    original = to_original(tiny_params)
    for key in ('v_encoder.f_encoder.embeddings.word_embeddings.weight',
                'v_encoder.f_encoder.lm_head.bias'):
        original[key] = original[key][:90]
    converted = convert.convert_original(original, TINY)
    word = converted['v_encoder']['f_encoder']['embeddings']['word_embeddings']['embedding']
    np.testing.assert_array_equal(word[:90], original[
        'v_encoder.f_encoder.embeddings.word_embeddings.weight'])
    assert word.shape == (96, 64) and not word[90:].any()


def test_scanned_layers_match_unscanned(tiny_params):
    scanned_cfg = dataclasses.replace(TINY, scan_layers=True, remat_policy='full')
    scanned = convert.convert_original(to_original(tiny_params), scanned_cfg)
    assert scanned['v_encoder']['c_encoder']['encoder']['layer']['output']['dense'][
        'kernel'].shape == (2, 256, 64)
    batch = synthetic.video_batch(0, TINY, videos=2)
    video = {k: batch[k] for k in VIDEO_KEYS}

    def encode(config, params):
        return run_jitted(lambda p: HeroModel(config).apply({'params': p}, video,
                                                            method=HeroModel.encode_video), params)
    np.testing.assert_allclose(encode(scanned_cfg, scanned), encode(TINY, tiny_params),
                               rtol=1e-5, atol=1e-5)


def test_padding_rows_get_no_lookup_gradient(tiny_params):
    batch = synthetic.video_batch(0, TINY, videos=2)
    video = {k: jnp.asarray(batch[k]) for k in VIDEO_KEYS}
    mfm = jnp.asarray(masking.mask_frames(jax.random.key(0), video['frame_mask']))
    model = HeroModel(TINY)

    def loss(p):
        return jnp.sum(model.apply({'params': p}, video, mfm, method=HeroModel.encode_video) ** 2)
    grads = run_jitted(jax.grad(loss), tiny_params)
    v_enc = grads['v_encoder']
    word = v_enc['f_encoder']['embeddings']['word_embeddings']['embedding']
    assert not np.any(word[1]) and np.any(word[2])      # <pad> row frozen, [SEP] row trained
    for table in (v_enc['mask_embedding']['embedding'],
                  v_enc['f_encoder']['img_embeddings']['mask_embedding']['embedding']):
        assert not np.any(table[0]) and np.any(table[1])


def fake_roberta(rng, layers=4, vocab=90, hidden=64):
    """A RoBERTa-layout state dict with the tiny sizes (one type row, 64 positions)."""
    out = {'roberta.embeddings.word_embeddings.weight': rng.normal(size=(vocab, hidden)),
           'roberta.embeddings.position_embeddings.weight': rng.normal(size=(64, hidden)),
           'roberta.embeddings.token_type_embeddings.weight': rng.normal(size=(1, hidden)),
           'roberta.embeddings.LayerNorm.weight': rng.normal(size=hidden),
           'roberta.embeddings.LayerNorm.bias': rng.normal(size=hidden),
           'roberta.pooler.dense.weight': rng.normal(size=(hidden, hidden)),
           'roberta.pooler.dense.bias': rng.normal(size=hidden),
           'lm_head.dense.weight': rng.normal(size=(hidden, hidden))}
    for i in range(layers):
        pre = f'roberta.encoder.layer.{i}.'
        for name in ('attention.self.query', 'attention.self.key', 'attention.self.value',
                     'attention.output.dense'):
            out[pre + name + '.weight'] = rng.normal(size=(hidden, hidden))
            out[pre + name + '.bias'] = rng.normal(size=hidden)
        for name in ('attention.output.LayerNorm', 'output.LayerNorm'):
            out[pre + name + '.weight'] = rng.normal(size=hidden)
            out[pre + name + '.bias'] = rng.normal(size=hidden)
        out[pre + 'intermediate.dense.weight'] = rng.normal(size=(256, hidden))
        out[pre + 'intermediate.dense.bias'] = rng.normal(size=256)
        out[pre + 'output.dense.weight'] = rng.normal(size=(hidden, 256))
        out[pre + 'output.dense.bias'] = rng.normal(size=hidden)
    return {k: v.astype(np.float32) for k, v in out.items()}


def test_roberta_init_cli(tmp_path):
    roberta = fake_roberta(np.random.default_rng(0))
    src = tmp_path / 'roberta'
    src.mkdir()
    np.savez(src / 'model.npz', **roberta)
    convert.main(['--roberta', str(src), '--out', str(tmp_path / 'out'), '--variant', 'tiny'])
    params, config = load_params(str(tmp_path / 'out'))
    assert config == TINY
    f_enc = params['v_encoder']['f_encoder']
    emb = f_enc['embeddings']
    word = emb['word_embeddings']['embedding']
    np.testing.assert_array_equal(word[:90], roberta['roberta.embeddings.word_embeddings.weight'])
    assert word.shape == (96, 64) and not np.any(word[90:])
    type_row = roberta['roberta.embeddings.token_type_embeddings.weight'][0]
    np.testing.assert_array_equal(emb['token_type_embeddings']['embedding'],
                                  np.stack([type_row, type_row]))
    for dst, src_layer in ((0, 1), (1, 3)):     # every second RoBERTa layer
        np.testing.assert_array_equal(
            f_enc['encoder'][f'layer_{dst}']['intermediate']['dense']['kernel'],
            roberta[f'roberta.encoder.layer.{src_layer}.intermediate.dense.weight'].T)
    np.testing.assert_array_equal(f_enc['pooler']['dense']['bias'],
                                  roberta['roberta.pooler.dense.bias'])
    # the LM head (no `roberta.` prefix) and the t-TRM stay freshly initialised
    assert not np.allclose(f_enc['lm_head']['dense']['kernel'], roberta['lm_head.dense.weight'].T)
    assert not np.any(f_enc['lm_head']['bias'])
    mask = params['v_encoder']['mask_embedding']['embedding']
    assert not np.any(mask[0]) and np.any(mask[1])


def test_original_cli_writes_loadable_params(tmp_path, tiny_params):
    np.savez(tmp_path / 'sd.npz', **to_original(tiny_params))
    convert.main(['--original', str(tmp_path / 'sd.npz'), '--out', str(tmp_path / 'ckpt'),
                  '--variant', 'tiny'])
    params, _ = load_params(str(tmp_path / 'ckpt'))
    jax.tree.map(np.testing.assert_array_equal, params, tiny_params)


def test_mask_tokens():
    ids = jnp.asarray(np.random.default_rng(0).integers(4, 95, size=(64, 12)), jnp.int32)
    ids = ids.at[:, 0].set(0).at[:, 9:].set(1)
    txt_mask = (ids != 1).astype(jnp.int32)
    fn = jax.jit(lambda r: masking.mask_tokens(r, ids, txt_mask, mask_id=95,
                                               random_id_range=(4, 95)))
    corrupted, labels = fn(jax.random.key(0))
    labels = np.asarray(labels)
    assert (labels >= 0).any(axis=1).all()                # at least one target per row
    assert not (labels[:, 0] >= 0).any() and not (labels[:, 9:] >= 0).any()
    np.testing.assert_array_equal(labels[labels >= 0], np.asarray(ids)[labels >= 0])
    changed = np.asarray(corrupted) != np.asarray(ids)
    assert not changed[labels < 0].any()
    assert 0.1 < (labels >= 0)[:, 1:9].mean() < 0.25


def test_mask_tokens_cap_keeps_the_first_selections():
    """max_predictions caps the selections per row at the first K; rows under the cap are
    masked exactly as without it (same draws)."""
    ids = jnp.asarray(np.random.default_rng(1).integers(4, 95, size=(256, 12)), jnp.int32)
    ids = ids.at[:, 0].set(0)
    txt_mask = jnp.ones_like(ids)
    mask = jax.jit(lambda r, k: masking.mask_tokens(r, ids, txt_mask, mask_id=95,
                                                    random_id_range=(4, 95), mask_prob=0.4,
                                                    max_predictions=k), static_argnums=1)
    free_ids, free = (np.asarray(x) for x in mask(jax.random.key(3), 0))
    capped_ids, capped = (np.asarray(x) for x in mask(jax.random.key(3), 4))
    counts = (free >= 0).sum(1)
    assert (counts > 4).any() and ((capped >= 0).sum(1) == np.minimum(counts, 4)).all()
    under = counts <= 4
    np.testing.assert_array_equal(capped[under], free[under])
    np.testing.assert_array_equal(capped_ids[under], free_ids[under])
    over = ~under
    first4 = np.cumsum(free[over] >= 0, axis=1) <= 4
    np.testing.assert_array_equal(capped[over], np.where(first4, free[over], -1))
    np.testing.assert_array_equal(capped_ids[over], np.where(first4, free_ids[over], ids[over]))


def test_mlm_prediction_budget_scores_every_target():
    """With the masking capped at K, the LM head at K gathered positions per row gives the
    loss and accuracy of scoring every text position."""
    from hero import pretrain
    model = HeroModel(TINY)
    params = nn.meta.unbox(init_params(model, jax.random.key(0)))
    rng = np.random.default_rng(2)
    rows, frames, text = 6, 3, 9
    ids = jnp.asarray(rng.integers(4, 95, size=(rows, text)), jnp.int32).at[:, 0].set(0)
    txt_mask = jnp.asarray(np.arange(text)[None] < rng.integers(3, text + 1, size=(rows, 1)),
                           jnp.int32)
    corrupted, labels = masking.mask_tokens(jax.random.key(5), ids, txt_mask, mask_id=95,
                                            random_id_range=(4, 95), mask_prob=0.5,
                                            max_predictions=3)
    assert int((labels >= 0).sum(1).max()) == 3
    batch = dict(frame_feats=jnp.asarray(rng.normal(size=(rows, frames, TINY.vfeat_dim)),
                                         jnp.float32),
                 frame_mask=jnp.ones((rows, frames), jnp.int32), txt_ids=corrupted,
                 txt_mask=txt_mask, txt_labels=labels)
    loss = jax.jit(lambda p, b, k: pretrain.mlm_loss(model, p, b, None, True, k),
                   static_argnums=2)
    all_loss, all_metrics = loss(params, batch, 0)
    budget_loss, budget_metrics = loss(params, batch, 3)
    np.testing.assert_allclose(budget_loss, all_loss, rtol=1e-6)
    np.testing.assert_allclose(budget_metrics['mlm_accuracy'], all_metrics['mlm_accuracy'],
                               rtol=1e-6)


def test_init_follows_the_original():
    """Spec §1.9: v_encoder N(0, 0.02) / zero biases / LN (1, 0); top-level VSM modules keep
    PyTorch defaults (kaiming-uniform Linear/Conv, N(0, 1) query positions)."""
    model = HeroModel(TINY)
    init = jax.jit(lambda r: nn.meta.unbox(init_params(model, r)))
    params = flatten_dict(init.lower(jax.random.key(0)).compile(FAST_COMPILE)(jax.random.key(0)))
    params = {'/'.join(k): np.asarray(v) for k, v in params.items()}
    word = params['v_encoder/f_encoder/embeddings/word_embeddings/embedding']
    assert abs(word.std() - 0.02) < 0.002
    assert not params['v_encoder/f_encoder/lm_head/bias'].any()
    assert not params['v_encoder/frame_transform/net_1/bias'].any()
    np.testing.assert_array_equal(params['v_encoder/fom_output/LayerNorm/scale'], 1.0)
    for key, fan_in in (('video_query_linear/kernel', 64), ('video_query_linear/bias', 64),
                        ('q_feat_attn/query_input_proj/net_1/bias', 64),
                        ('video_st_predictor/kernel', 5)):
        bound = 1 / np.sqrt(fan_in)
        assert np.abs(params[key]).max() <= bound and np.abs(params[key]).max() > bound / 2, key
    assert abs(params['q_feat_attn/query_pos_embed/position_embeddings/embedding'].std() - 1) < 0.05
