"""MERLOT Reserve against the original implementation's reference vectors (tiny config).

The released-format checkpoint ../shared/reference/mreserve/checkpoint.msgpack goes through
`mreserve.convert` (original and scanned layouts) and the converted Orbax checkpoint must
reproduce every output of ../shared/reference/mreserve/reference.npz.
"""
import json

import jax
import numpy as np
import pytest

from mreserve.convert import convert, read_original
from mreserve.losses import all_gather_rows, pretrain_losses
from mreserve.model_config import ModelConfig
from mreserve.modeling import MerlotReserve
from mreserve.params import to_scanned
from mreserve.pretrain_model import MerlotReservePretrainer
from mreserve.zero_shot import PretrainedMerlotReserve
from trainer.params_io import load_params

RTOL, ATOL = 1e-4, 1e-5


@pytest.fixture(scope='module')
def ref(shared_dir):
    folder = shared_dir / 'reference' / 'mreserve'
    if not (folder / 'reference.npz').is_file():
        pytest.skip('../shared/reference/mreserve is not present')
    return dict(np.load(folder / 'reference.npz')), folder / 'checkpoint.msgpack'


@pytest.fixture(scope='module', params=['original', 'scanned'])
def converted(request, ref, tmp_path_factory):
    """(ModelConfig, params, directory) of a checkpoint written by mreserve.convert."""
    z, checkpoint = ref
    scan = request.param == 'scanned'
    out = tmp_path_factory.mktemp(f'mreserve_{request.param}')
    convert(str(checkpoint), str(out), variant='tiny', scan=scan)
    config = ModelConfig.from_config(json.loads(str(z['cfg_json']))).replace(
        scan_layers=scan, batch_derived_rng=True)
    assert json.loads((out / 'config.json').read_text())['variant'] == 'tiny'
    return config, load_params(str(out)), out


def assert_matches(name, actual, z, max_errors):
    expected = z[name]
    actual = np.asarray(actual).reshape(expected.shape)
    if expected.dtype.kind in 'biu':
        np.testing.assert_array_equal(actual, expected, err_msg=name)
        return
    np.testing.assert_allclose(actual, expected, rtol=RTOL, atol=ATOL, err_msg=name)
    max_errors[name] = float(np.max(np.abs(actual.astype(np.float64) - expected)))


def report(max_errors):
    for name, err in sorted(max_errors.items()):
        print(f'  {name:45s} max abs err {err:.2e}')


def test_checkpoint_manifest(ref):
    """Loader self-test: every leaf's shape, sum and |sum| as the original loader saw them."""
    z, checkpoint = ref
    manifest = json.loads(str(z['param_manifest_json']))
    leaves = jax.tree_util.tree_flatten_with_path(read_original(str(checkpoint)))[0]
    flat = {'/'.join(key.key for key in path): leaf for path, leaf in leaves}
    assert sorted(flat) == sorted(manifest)
    for name, entry in manifest.items():
        leaf = flat[name]
        assert leaf.dtype == np.float32 and list(leaf.shape) == entry['shape'], name
        np.testing.assert_allclose(leaf.astype(np.float64).sum(), entry['sum'],
                                   rtol=1e-6, atol=1e-6, err_msg=name)
        np.testing.assert_allclose(np.abs(leaf.astype(np.float64)).sum(), entry['abs_sum'],
                                   rtol=1e-6, err_msg=name)


def test_converted_params_are_the_original(ref, converted):
    z, checkpoint = ref
    config, params, _ = converted
    original = read_original(str(checkpoint))
    if config.scan_layers:
        original = to_scanned(original)
    jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, params), original)


def test_zero_shot_api(ref, converted):
    z, _ = ref
    config, params, _ = converted
    model = MerlotReserve(config)
    a = {k[len('A_in/'):]: z[k] for k in z if k.startswith('A_in/') and 'json' not in k}

    @jax.jit
    def zero_shot(p):
        """Every zero-shot entry point in one compiled call (eager dispatch is slow)."""
        def run(method, *args):
            return model.apply({'params': p}, *args, method=method, mutable=['intermediates'])
        video, video_state = run(model.embed_video, a['images'], a['audio_clips'], a['tokens'],
                                 a['subseg_idxs'])
        labels, span_state = run(model.embed_text_spans_only, a['text_spans'])
        inter = {**video_state['intermediates'], **span_state['intermediates']}
        return {'embed_video': video, 'label_space': labels,
                'embed_audio_only': run(model.embed_audio_only, a['audio_clips'])[0],
                'imgseq_only': run(model.get_imgseq_only, a['images'])[0],
                'audioseq_only': run(model.get_audioseq_only, a['audio_clips'])[0],
                'mask_logits': 100 * video @ labels.T * (a['tokens'] == 3)[:, None],
                }, {name: value[0] for name, value in inter.items()}

    out, inter = zero_shot(params)
    errors = {}
    for name, value in inter.items():
        assert_matches(f'A_mid/{name}', value, z, errors)
    for name in ('embed_video', 'label_space', 'embed_audio_only', 'imgseq_only',
                 'mask_logits'):
        assert_matches(f'A_out/{name}', out[name], z, errors)
    np.testing.assert_allclose(out['audioseq_only'], z['A_mid/audio/seq_attnpool'],
                               rtol=RTOL, atol=ATOL)
    assert {k[len('A_mid/'):] for k in z if k.startswith('A_mid/')} <= set(inter)
    report(errors)


def test_pretraining_forward_and_loss(ref, converted):
    """Two emulated devices (vmap with axis 'batch'), each its own forward; negatives are
    all-gathered across them as in the original pmap."""
    z, _ = ref
    config, params, _ = converted
    model = MerlotReservePretrainer(config)
    batch = {k[len('B_in/'):]: z[k] for k in z if k.startswith('B_in/')}

    def device(p, b):
        preds, state = model.apply({'params': p}, b, mutable=['intermediates'])
        return preds, pretrain_losses(preds, all_gather_rows('batch')), state['intermediates']

    preds, losses, inter = jax.jit(jax.vmap(device, in_axes=(None, 0), axis_name='batch'))(
        params, batch)
    errors = {}
    for kind, entries in preds.items():
        for name, value in entries.items():
            assert_matches(f'B_out/{kind}/{name}', value, z, errors)
    for name, value in losses.items():
        assert_matches(f'B_loss/{name}', value, z, errors)
    for name, value in inter.items():
        assert_matches(f'B_mid/{name}', value[0], z, errors)
    expected_mid = {k[len('B_mid/'):] for k in z if k.startswith('B_mid/')}
    assert expected_mid <= set(inter), expected_mid - set(inter)
    report(errors)


def test_loss_only(ref):
    z, _ = ref
    preds = {}
    for key in z:
        if key.startswith('L_in/'):
            kind, name = key[len('L_in/'):].split('/')
            preds.setdefault(kind, {})[name] = z[key]
    losses = jax.jit(jax.vmap(lambda p: pretrain_losses(p, all_gather_rows('batch')),
                              axis_name='batch'))(preds)
    errors = {}
    for name, value in losses.items():
        assert_matches(f'L_loss/{name}', value, z, errors)
    assert set(losses) == {k[len('L_loss/'):] for k in z if k.startswith('L_loss/')}
    report(errors)


def test_global_batch_loss_equals_device_mean(ref):
    """The engine's form (plain arrays over the global batch, no axis name) gives the mean of
    the per-device losses for the three contrastive terms."""
    z, _ = ref
    preds = {}
    for key in z:
        if key.startswith('L_in/'):
            kind, name = key[len('L_in/'):].split('/')
            preds.setdefault(kind, {})[name] = z[key].reshape((-1,) + z[key].shape[2:])
    losses = jax.jit(pretrain_losses)(preds)
    for name in ('imgs_to_audio', 'text_to_audio', 'stuff_to_span', 'total'):
        np.testing.assert_allclose(losses[name], z[f'L_loss/{name}'].mean(), rtol=1e-5)


def test_pretrained_wrapper(ref, converted, shared_dir):
    """PretrainedMerlotReserve on the converted directory: the option strings through the
    shared BPE give the reference label space; bound methods give the reference outputs."""
    z, _ = ref
    if converted[0].scan_layers:
        pytest.skip('the wrapper is layout-agnostic; the original layout is enough')
    bpe = shared_dir / 'tokenizers' / 'mreserve_lowercase_bpe.json'
    if not bpe.is_file():
        pytest.skip('../shared/tokenizers/mreserve_lowercase_bpe.json is not present')
    model = PretrainedMerlotReserve.from_converted(str(converted[2]), tokenizer=str(bpe))
    labels = model.get_label_space(json.loads(str(z['A_in/options_json'])))
    np.testing.assert_allclose(labels, z['A_out/label_space'], rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(model.embed_audio_only(z['A_in/audio_clips']),
                               z['A_out/embed_audio_only'], rtol=RTOL, atol=ATOL)
    video = model.embed_preencoded_audio(model.get_imgseq_only(z['A_in/images']),
                                         model.get_audioseq_only(z['A_in/audio_clips']),
                                         z['A_in/tokens'], z['A_in/subseg_idxs'])
    np.testing.assert_allclose(video, z['A_out/embed_video'], rtol=RTOL, atol=ATOL)
