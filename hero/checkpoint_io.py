"""Params-only Orbax checkpoints for converted HERO weights (plus the model config as JSON).

Self-contained on purpose: the engine's checkpoint wrapper handles training state; a converted
original checkpoint only needs a parameter tree and the config that describes its shapes.
"""
from __future__ import annotations

import dataclasses
import json
import os

import orbax.checkpoint as ocp

from hero.config import HeroConfig

PARAMS_SUBDIR = 'params'
CONFIG_FILE = 'hero_config.json'


def save_params(directory: str, params, config: HeroConfig) -> None:
    """Write `params` (plain arrays) to DIR/params and the model config to DIR/hero_config.json."""
    directory = os.path.abspath(directory)
    os.makedirs(directory, exist_ok=True)
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(os.path.join(directory, PARAMS_SUBDIR), params, force=True)
    checkpointer.wait_until_finished()
    with open(os.path.join(directory, CONFIG_FILE), 'w') as f:
        json.dump(dataclasses.asdict(config), f, indent=2, sort_keys=True)


def load_params(directory: str):
    """-> (params as numpy/jax arrays, HeroConfig)."""
    directory = os.path.abspath(directory)
    with open(os.path.join(directory, CONFIG_FILE)) as f:
        config = HeroConfig(**json.load(f))
    params = ocp.StandardCheckpointer().restore(os.path.join(directory, PARAMS_SUBDIR))
    return params, config
