"""Convert original HERO (PyTorch) weights, or a RoBERTa checkpoint, into Flax parameters.

    python -m hero.convert --original state_dict.pt|.npz --out DIR [--variant tiny|base]
    python -m hero.convert --roberta ROBERTA_DIR_OR_FILE --out DIR [--variant base]

Names map by rule because the Flax modules mirror the state-dict names (spec §1.8, §7.3):
`a.layer.3.b` -> `a/layer_3/b`; Linear `weight` (out, in) -> `kernel` (in, out); Conv1d weight
(1, 1, 5) -> kernel (5, 1, 1); Embedding `weight` -> `embedding`; LayerNorm `weight` -> `scale`.
The tied `lm_head.decoder.weight`, the `pad` buffers and the `vocab_padded` flag are dropped.
Every tensor is checked against `jax.eval_shape` of the model's init; the first mismatch raises
an error naming the key and both shapes. Tensors are cast to float32 (released checkpoints may be
float16 from AMP O2). torch is only imported for `.pt`/`.bin` files.
"""
from __future__ import annotations

import argparse
import dataclasses
import os

import flax.linen as nn
import jax
import numpy as np
from flax.traverse_util import flatten_dict, unflatten_dict

from hero.checkpoint_io import save_params
from hero.config import HeroConfig
from hero.modeling import HeroModel, init_params

DROPPED_KEYS = ('v_encoder.pad', 'v_encoder.f_encoder.pad',
                'v_encoder.f_encoder.lm_head.decoder.weight', 'vocab_padded')
VOCAB_KEYS = ('v_encoder/f_encoder/embeddings/word_embeddings/embedding',
              'v_encoder/f_encoder/lm_head/bias')


class ShapeMismatchError(ValueError):
    """An original tensor does not fit the Flax model built from the chosen config."""


def load_state_dict(path: str) -> dict[str, np.ndarray]:
    """`.npz` (no torch needed) or a torch file (`.pt`/`.bin`) -> {name: float32 array}."""
    if path.endswith('.npz'):
        with np.load(path) as data:
            return {k: np.asarray(data[k]) for k in data.files}
    import torch  # only the convert extra installs it
    raw = torch.load(path, map_location='cpu', weights_only=True)
    return {k: v.float().numpy() for k, v in raw.items() if isinstance(v, torch.Tensor)}


def flax_path(key: str) -> tuple[str, ...]:
    """'v_encoder.c_encoder.encoder.layer.0.output.dense.weight' -> module path with layer_0."""
    parts: list[str] = []
    for part in key.split('.'):
        if part.isdigit():
            parts[-1] = f'{parts[-1]}_{part}'
        else:
            parts.append(part)
    return tuple(parts)


Targets = dict[tuple[str, ...], jax.ShapeDtypeStruct]


def convert_tensor(key: str, value: np.ndarray, targets: Targets):
    """One original tensor -> (flax path, array) or ShapeMismatchError / KeyError."""
    module, leaf = flax_path(key)[:-1], key.rsplit('.', 1)[-1]
    if leaf == 'weight':
        names = [n for n in ('kernel', 'embedding', 'scale') if module + (n,) in targets]
        if not names:
            raise KeyError(f'{key}: no Flax parameter at {"/".join(module)}')
        leaf = names[0]
    path = module + (leaf,)
    if path not in targets:
        raise KeyError(f'{key}: no Flax parameter at {"/".join(path)}')
    original_shape = np.shape(value)
    value = np.asarray(value, np.float32)
    if leaf == 'kernel':
        value = value.transpose(2, 1, 0) if value.ndim == 3 else value.T
    want = tuple(targets[path].shape)
    if '/'.join(path) in VOCAB_KEYS and value.shape[0] < want[0] == -(-value.shape[0] // 8) * 8:
        # vocab padded to the next multiple of 8 with zero rows (spec §1.1)
        value = np.concatenate([value, np.zeros((want[0] - value.shape[0],) + value.shape[1:],
                                                np.float32)])
    if value.shape != want:
        raise ShapeMismatchError(
            f'{key}: original shape {tuple(original_shape)} (as Flax {"/".join(path)}: '
            f'{value.shape}) does not match the model shape {want}')
    return path, value


def target_shapes(config: HeroConfig) -> Targets:
    """Flat {path: shape} of the *unscanned* model (scan stacking happens after conversion)."""
    model = HeroModel(dataclasses.replace(config, scan_layers=False))
    boxed = jax.eval_shape(lambda rng: init_params(model, rng), jax.random.key(0))
    return flatten_dict(nn.meta.unbox(boxed))


def map_state_dict(state_dict: dict[str, np.ndarray], config: HeroConfig, *, strict: bool = True):
    """Original tensors -> flat {flax path: array}. strict: every model parameter must be set."""
    targets = target_shapes(config)
    out = {}
    for key, value in state_dict.items():
        if key in DROPPED_KEYS or not isinstance(value, np.ndarray):
            continue
        path, array = convert_tensor(key, value, targets)
        out[path] = array
    missing = sorted('/'.join(p) for p in set(targets) - set(out))
    if strict and missing:
        raise KeyError(f'parameters missing from the original checkpoint: {missing}')
    return out


def stack_layers(flat: dict[tuple[str, ...], np.ndarray]):
    """Unscanned `.../layer_i/...` -> scanned `.../layer/...` with a leading layers axis."""
    groups: dict[tuple, dict[int, np.ndarray]] = {}
    out = {}
    for path, value in flat.items():
        hit = [i for i, p in enumerate(path) if p.startswith('layer_') and p[6:].isdigit()]
        if not hit:
            out[path] = value
            continue
        i = hit[0]
        new = path[:i] + ('layer',) + path[i + 1:]
        groups.setdefault(new, {})[int(path[i][6:])] = value
    for new, layers in groups.items():
        out[new] = np.stack([layers[i] for i in range(len(layers))])
    return out


def finalize(flat, config: HeroConfig):
    """Flat unscanned params -> nested tree in the layout `config.scan_layers` asks for."""
    if config.scan_layers:
        flat = stack_layers(flat)
    return unflatten_dict(flat)


def convert_original(state_dict: dict[str, np.ndarray], config: HeroConfig):
    """A HeroForPretraining state dict -> Flax params (plain numpy arrays)."""
    return finalize(map_state_dict(state_dict, config), config)


def roberta_layer_map(num_roberta_layers: int, num_f_layers: int) -> dict[int, int]:
    """RoBERTa layer -> f-TRM layer: every second layer for 12 -> 6 (1, 3, ..., 11 -> 0..5)."""
    step = num_roberta_layers // num_f_layers
    return {step * (i + 1) - 1: i for i in range(num_f_layers)}


def convert_roberta(roberta: dict[str, np.ndarray], config: HeroConfig, rng):
    """RoBERTa weights -> HERO pretraining start (spec §1.9).

    f-TRM embeddings, kept layers and pooler come from `roberta.*`; the vocab is padded with zero
    rows; the 1-row type table becomes 2 identical rows; everything else (t-TRM, all heads, the LM
    head, which RoBERTa stores without the `roberta.` prefix) keeps a fresh init, except row 0 of
    the t-level mask embedding, which is zeroed.
    """
    prefix = 'roberta.encoder.layer.'
    num_layers = len({k[len(prefix):].split('.')[0] for k in roberta if k.startswith(prefix)})
    layer_map = roberta_layer_map(num_layers, config.f_layers)
    renamed = {}
    for key, value in roberta.items():
        if not key.startswith('roberta.'):
            continue
        rest = key[len('roberta.'):]
        if rest.startswith('encoder.layer.'):
            src = int(rest.split('.')[2])
            if src not in layer_map:
                continue
            rest = 'encoder.layer.{}.{}'.format(layer_map[src], rest.split('.', 3)[3])
        if rest == 'embeddings.token_type_embeddings.weight':
            value = np.repeat(value[:1], config.type_vocab_size, axis=0)
        if rest == 'embeddings.position_ids':
            continue
        renamed['v_encoder.f_encoder.' + rest] = value
    loaded = map_state_dict(renamed, config, strict=False)
    model = HeroModel(dataclasses.replace(config, scan_layers=False))
    fresh = jax.jit(lambda r: nn.meta.unbox(init_params(model, r)))(rng)
    fresh = flatten_dict(jax.tree.map(np.asarray, fresh))
    fresh.update(loaded)
    mask_key = ('v_encoder', 'mask_embedding', 'embedding')
    fresh[mask_key] = fresh[mask_key].copy()
    fresh[mask_key][0] = 0.0
    return finalize(fresh, config)


def find_roberta_file(path: str) -> str:
    """A file, or a directory holding one of the usual RoBERTa weight file names."""
    if os.path.isfile(path):
        return path
    for name in ('pytorch_model.bin', 'model.npz', 'roberta.npz', 'model.pt'):
        if os.path.isfile(os.path.join(path, name)):
            return os.path.join(path, name)
    raise FileNotFoundError(f'no RoBERTa weights (pytorch_model.bin / model.npz) in {path}')


def variant_config(variant: str, scan_layers: bool) -> HeroConfig:
    from configs.hero.pretrain import get_config
    model = get_config(f'variant={variant}').model
    return dataclasses.replace(HeroConfig.from_config_dict(model), scan_layers=scan_layers)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument('--original', help='HeroForPretraining state dict (.pt or .npz)')
    source.add_argument('--roberta', help='RoBERTa checkpoint file or directory')
    parser.add_argument('--out', required=True, help='output directory (Orbax params)')
    parser.add_argument('--variant', default='base', choices=('tiny', 'base'))
    parser.add_argument('--scan_layers', action='store_true', help='write scanned layer stacks')
    parser.add_argument('--seed', type=int, default=0, help='init seed for --roberta')
    args = parser.parse_args(argv)
    config = variant_config(args.variant, args.scan_layers)
    if args.original:
        params = convert_original(load_state_dict(args.original), config)
    else:
        roberta = load_state_dict(find_roberta_file(args.roberta))
        params = convert_roberta(roberta, config, jax.random.key(args.seed))
    save_params(args.out, params, config)
    count = sum(int(np.size(x)) for x in jax.tree.leaves(params))
    print(f'wrote {count:,} parameters to {args.out}')


if __name__ == '__main__':
    main()
