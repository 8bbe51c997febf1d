"""HERO port vs the original implementation: ../shared/reference/hero (spec §7.3).

Converts the original state dict, feeds the original collate outputs (through
hero.batch_layout) and compares every stored encoder intermediate and task output in eval mode
and in train mode with dropout 0, at rtol 1e-4 / atol 1e-5.
"""
import dataclasses
import importlib.util
import json

import jax
import numpy as np
import pytest

from hero import batch_layout, pretrain
from hero.config import HeroConfig
from hero.convert import convert_original, load_state_dict
from hero.modeling import VIDEO_KEYS, HeroModel
from hero.vsm import VsmSettings

TOL = dict(rtol=1e-4, atol=1e-5)
EVAL_VSM = VsmSettings(lw_st_ed=0.01, drop_svmr_prob=0.0, hard_negative_start_step=10**9)
HARD_VSM = dataclasses.replace(EVAL_VSM, hard_negative_start_step=0)


@pytest.fixture(scope='module')
def ref(shared_dir):
    root = shared_dir / 'reference' / 'hero'
    if not (root / 'state_dict.npz').exists():
        pytest.skip('../shared/reference/hero is not present')
    with open(root / 'batches_meta.json') as f:
        meta = json.load(f)
    return dict(root=root, config=HeroConfig.from_original_json(str(root / 'config.json')),
                arrays=dict(np.load(root / 'batches.npz')), meta=meta,
                out=dict(np.load(root / 'outputs.npz')))


@pytest.fixture(scope='module')
def params(ref):
    return convert_original(load_state_dict(str(ref['root'] / 'state_dict.npz')), ref['config'])


def check(name, actual, expected, errors):
    actual = np.asarray(actual, np.float64)
    np.testing.assert_allclose(actual, expected, err_msg=name, **TOL)
    errors[name] = float(np.max(np.abs(actual - expected))) if actual.size else 0.0


@pytest.fixture(scope='module')
def errors():
    report = {}
    yield report
    print('\nmax abs error vs the original:')
    for name, err in report.items():
        print(f'  {name:45s} {err:.2e}')


def test_torch_state_dict_matches_npz(ref, params):
    if importlib.util.find_spec('torch') is None:
        pytest.skip('torch is not installed (the .npz path needs no torch)')
    from_pt = convert_original(load_state_dict(str(ref['root'] / 'state_dict.pt')),
                               ref['config'])
    jax.tree.map(np.testing.assert_array_equal, from_pt, params)


def test_repr_intermediates(ref, params, errors):
    out, meta = ref['out'], ref['meta']
    video = batch_layout.video_batch(ref['arrays'], meta, 'repr')
    model = HeroModel(ref['config'])
    frames, state = model.apply({'params': params}, {k: video[k] for k in VIDEO_KEYS},
                                method=HeroModel.encode_video, capture_intermediates=True)
    inter = state['intermediates']['v_encoder']
    check('repr', frames, out['eval__repr'], errors)
    check('frame_transform', inter['frame_transform']['__call__'][0],
          out['eval__repr_intermediate__frame_transform'], errors)
    check('c_emb', inter['c_encoder']['embeddings']['__call__'][0],
          out['eval__repr_intermediate__c_emb'], errors)
    check('c_encoder_out', inter['c_encoder']['__call__'][0],
          out['eval__repr_intermediate__c_encoder_out.0'], errors)
    # f-TRM rows: original rows are flat subtitles, ours (video, subtitle) with padding
    n_sub = video['sub_ids'].shape[1]
    rows = [b * n_sub + j for b, n in enumerate(meta['repr__num_subs']) for j in range(n)]
    f_enc = inter['f_encoder']
    check('f_img_emb', np.asarray(f_enc['img_embeddings']['__call__'][0])[rows],
          out['eval__repr_intermediate__f_img_emb'], errors)
    check('f_txt_emb', np.asarray(f_enc['embeddings']['__call__'][0])[rows],
          out['eval__repr_intermediate__f_txt_emb'], errors)
    # the original f-TRM output is in the gathered layout; its gather index addresses exactly
    # our `[frames | text]` concatenation
    ours = np.asarray(f_enc['encoder']['__call__'][0])[rows]
    gather = ref['arrays']['repr__f_gather_index']
    mask = ref['arrays']['repr__f_attn_masks'].astype(bool)
    gathered = np.take_along_axis(ours, gather[..., None], axis=1)
    check('f_encoder_out', gathered[mask],
          out['eval__repr_intermediate__f_encoder_out.0'][mask], errors)


def test_query_encoder(ref, params, errors):
    out = ref['out']
    vsm = batch_layout.video_batch(ref['arrays'], ref['meta'], 'vsm')
    ids, mask = vsm['query_ids'].reshape(20, -1), vsm['query_mask'].reshape(20, -1)
    model = HeroModel(ref['config'])
    tokens = model.apply({'params': params}, ids, mask, method=HeroModel.encode_query_tokens)
    check('query_ftrm', tokens, out['eval__vsm_intermediate__query_ftrm'], errors)
    query = model.apply({'params': params}, ids, mask, method=HeroModel.encode_query)
    check('modularized_query', query, out['eval__vsm_intermediate__modularized_query'], errors)


@pytest.mark.parametrize('mode', ['eval', 'train_p0'])
def test_mlm_mfm_fom(ref, params, errors, mode):
    out, arrays, meta = ref['out'], ref['arrays'], ref['meta']
    config = ref['config']
    if mode == 'train_p0':
        config = dataclasses.replace(config, hidden_dropout=0.0, attention_dropout=0.0)
    model = HeroModel(config)
    deterministic = mode == 'eval'
    rng = jax.random.key(0)

    mlm = batch_layout.mlm_batch(arrays)
    logits, labels, ce = pretrain.mlm_outputs(model, params, mlm, rng, deterministic)
    valid = np.asarray(labels) >= 0
    check(f'{mode} mlm ce', np.asarray(ce)[valid], out[f'{mode}__mlm__loss'], errors)
    if mode == 'eval':
        check('eval mlm logits', np.asarray(logits)[valid], out['eval__mlm__pred'], errors)

    mfm = batch_layout.video_batch(arrays, meta, 'mfm')
    preds = np.asarray(pretrain.mfm_predictions(model, params, mfm, rng, deterministic))
    masked = mfm['mfm_mask']
    nce, _ = pretrain.mfm_nce_terms(preds, mfm['frame_feats'], masked)
    check(f'{mode} mfm-nce ce', np.asarray(nce)[masked], out[f'{mode}__mfm-nce__loss'], errors)
    check(f'{mode} mffr sq err', (preds[masked] - mfm['frame_feats'][masked]) ** 2,
          out[f'{mode}__mffr__loss'], errors)
    if mode == 'eval':
        check('eval mfm pred masked', preds[masked], out['eval__mfm-nce__pred.0'], errors)
        check('eval mfm pred negatives', preds[~masked], out['eval__mfm-nce__pred.1'], errors)
        check('eval mffr pred', preds[masked], out['eval__mffr__pred'], errors)

    fom = batch_layout.video_batch(arrays, meta, 'fom')
    loss, metrics = pretrain.fom_loss(model, params, fom, rng, deterministic)
    check(f'{mode} fom loss', loss, out[f'{mode}__fom__loss'], errors)
    if mode == 'eval':
        logits = pretrain.fom_outputs(model, params, fom, rng, True)
        check('eval fom logits', np.asarray(logits).reshape(-1, 100), out['eval__fom__pred'],
              errors)


def test_vsm_eval(ref, params, errors):
    out = ref['out']
    vsm = batch_layout.video_batch(ref['arrays'], ref['meta'], 'vsm')
    model = HeroModel(ref['config'])
    for i, term in enumerate(pretrain.vsm_eval_terms(model, params, vsm, 0, EVAL_VSM)):
        check(f'eval vsm loss.{i}', term, out[f'eval__vsm__loss.{i}'], errors)
    for i, pred in enumerate(pretrain.vsm_eval_predictions(model, params, vsm)):
        check(f'eval vsm pred.{i}', pred, out[f'eval__vsm__pred.{i}'], errors)


@pytest.mark.parametrize('settings,prefix', [(EVAL_VSM, 'train_p0'),
                                             (HARD_VSM, 'train_p0_hardneg')])
def test_vsm_train(ref, params, errors, settings, prefix):
    config = dataclasses.replace(ref['config'], hidden_dropout=0.0, attention_dropout=0.0)
    vsm = batch_layout.video_batch(ref['arrays'], ref['meta'], 'vsm')
    _, metrics = pretrain.vsm_loss(HeroModel(config), params, vsm, jax.random.key(0), 0,
                                   settings, deterministic=False)
    for i, name in enumerate(('vsm_st_ed', 'vsm_neg_ctx', 'vsm_neg_q')):
        check(f'{prefix} vsm loss.{i}', metrics[name], ref['out'][f'{prefix}__vsm__loss.{i}'],
              errors)
