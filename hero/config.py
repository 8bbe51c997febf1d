"""HeroConfig: the hashable model hyper-parameters every HERO module receives.

Flax modules need hashable attributes, so the `model` section of an ml_collections config is
frozen into this dataclass once (`HeroConfig.from_config_dict`). `from_original_json` reads the
original repository's `VideoModelConfig` JSON (f_config / c_config / q_config) so the reference
set and released checkpoints can be described without a hand-written config.
"""
from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any

# RoBERTa special ids as used by the HERO preprocessing (spec §1.1).
CLS_ID = 0
PAD_ID = 1
SEP_ID = 2


@dataclasses.dataclass(frozen=True)
class HeroConfig:
    """Sizes of HeroForPretraining (spec §1.2, §1.8). Defaults are the full-size model."""
    vocab_size: int = 50272
    # logits of the LM head are taken over the first `lm_vocab_size` rows (spec §2.1: the rows
    # padded at run time are excluded); 0 means the whole table.
    lm_vocab_size: int = 0
    hidden_size: int = 768
    num_heads: int = 12
    intermediate_size: int = 3072
    f_layers: int = 6
    c_layers: int = 3
    max_position_embeddings: int = 514      # f-TRM text positions
    c_max_position_embeddings: int = 514    # t-TRM frame positions
    q_max_position_embeddings: int = 514    # QueryFeatEncoder positions
    type_vocab_size: int = 2
    vfeat_dim: int = 4352
    max_frm_seq_len: int = 100              # f-level frame positions (inside a subtitle group)
    fom_num_classes: int = 100
    hidden_dropout: float = 0.1
    attention_dropout: float = 0.1
    initializer_range: float = 0.02
    scan_layers: bool = False
    remat_policy: str = 'none'   # none | full | any jax.checkpoint_policies name

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def logit_vocab_size(self) -> int:
        return self.lm_vocab_size or self.vocab_size

    @classmethod
    def from_config_dict(cls, cfg: Mapping[str, Any]) -> HeroConfig:
        """Build from a ConfigDict/dict; unknown keys fail with their name."""
        known = {f.name for f in dataclasses.fields(cls)}
        items = dict(cfg.items())
        unknown = sorted(set(items) - known)
        if unknown:
            raise KeyError(f'unknown HERO model config keys: {unknown}')
        return cls(**items)

    @classmethod
    def from_original_json(cls, path: str, **overrides) -> HeroConfig:
        """Read the original `VideoModelConfig` JSON (+ the reference set's `reference_meta`)."""
        with open(path) as f:
            raw = json.load(f)
        f_cfg, c_cfg, q_cfg = raw['f_config'], raw['c_config'], raw['q_config']
        meta = raw.get('reference_meta', {})
        kwargs = dict(
            vocab_size=f_cfg['vocab_size'],
            hidden_size=f_cfg['hidden_size'],
            num_heads=f_cfg['num_attention_heads'],
            intermediate_size=f_cfg['intermediate_size'],
            f_layers=f_cfg['num_hidden_layers'],
            c_layers=c_cfg['num_hidden_layers'],
            max_position_embeddings=f_cfg['max_position_embeddings'],
            c_max_position_embeddings=c_cfg['max_position_embeddings'],
            q_max_position_embeddings=q_cfg['max_position_embeddings'],
            type_vocab_size=f_cfg['type_vocab_size'],
            hidden_dropout=f_cfg['hidden_dropout_prob'],
            attention_dropout=f_cfg['attention_probs_dropout_prob'],
            initializer_range=f_cfg['initializer_range'],
        )
        for key in ('vfeat_dim', 'max_frm_seq_len', 'fom_num_classes'):
            if key in meta:
                kwargs[key] = meta[key]
        kwargs.update(overrides)
        return cls(**kwargs)
