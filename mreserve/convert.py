"""Convert a released MERLOT Reserve checkpoint (original msgpack format) to this project's
params-only Orbax checkpoint.

    python -m mreserve.convert --original FILE --out DIR [--variant tiny|base|large] [--scan]

The original file is `flax.serialization.to_bytes({step, params, opt_state})` with every f32
leaf stored as f16 (spec §5.5); only `params` is read and it is cast back to f32. Every shape is
checked against the model's abstract parameters before anything is written. The output is the
engine's params-only format (trainer/params_io.py): DIR/params (Orbax) and DIR/config.json.
"""
from __future__ import annotations

import argparse
import os
from typing import Any

import numpy as np
from flax import serialization

from configs.mreserve.pretrain import get_config
from mreserve.model_config import ModelConfig
from mreserve.params import abstract_params, param_count, to_scanned
from trainer.params_io import check_shapes, save_params


class NotACheckpointError(ValueError):
    """The file is not a MERLOT Reserve checkpoint in the released msgpack format."""


def read_original(path: str) -> dict[str, Any]:
    """The `params` tree of an original checkpoint file, every float leaf cast to float32."""
    with open(path, 'rb') as f:
        data = f.read()
    try:
        state = serialization.msgpack_restore(data)
    except Exception as e:  # msgpack raises several unrelated types on garbage input
        raise NotACheckpointError(
            f'{path} is not a MERLOT Reserve checkpoint: it does not decode as a flax msgpack '
            f'file ({type(e).__name__}: {e})') from e
    if not isinstance(state, dict) or not isinstance(state.get('params'), dict):
        found = sorted(state) if isinstance(state, dict) else type(state).__name__
        raise NotACheckpointError(
            f'{path} is not a MERLOT Reserve checkpoint: expected a msgpack map with a '
            f"'params' map (and 'step', 'opt_state'), found {found}")
    return _to_float32(state['params'], path)


def _to_float32(tree: Any, path: str, prefix: str = '') -> Any:
    if isinstance(tree, dict):
        return {k: _to_float32(v, path, f'{prefix}{k}/') for k, v in tree.items()}
    leaf = np.asarray(tree)
    if not np.issubdtype(leaf.dtype, np.floating) and leaf.dtype.name != 'bfloat16':
        raise NotACheckpointError(f'{path}: parameter {prefix.rstrip("/")!r} is not a float '
                                  f'array (dtype {leaf.dtype})')
    return leaf.astype(np.float32)


def convert(original: str, out: str, variant: str = 'base', scan: bool = False) -> Any:
    """Read, (optionally) scan, check against the `variant` model, write. Returns the params."""
    config = get_config(f'variant={variant},scan_layers={scan}')
    model_config = ModelConfig.from_config(config)
    params = read_original(original)
    if scan:
        params = to_scanned(params)
    try:
        check_shapes(abstract_params(model_config), params)
    except ValueError as e:
        raise ValueError(f'{original} does not fit the {variant!r} model: {e}') from e
    save_params(out, params, config={
        'variant': variant, 'scan_layers': scan, 'source': os.path.basename(original),
        'model': config.model.to_dict(), 'data': config.data.to_dict()})
    return params


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--original', required=True, help='released msgpack checkpoint file')
    parser.add_argument('--out', required=True, help='output directory')
    parser.add_argument('--variant', default='base', choices=('tiny', 'base', 'large'))
    parser.add_argument('--scan', action='store_true',
                        help='write the scanned layout (model.scan_layers=True)')
    args = parser.parse_args(argv)
    params = convert(args.original, args.out, args.variant, args.scan)
    print(f'wrote {param_count(params):,} parameters ({args.variant}, '
          f'{"scanned" if args.scan else "original"} layout) to {os.path.abspath(args.out)}')


if __name__ == '__main__':
    main()
