"""The model's static configuration: one frozen (hashable) dataclass for the flax modules.

Built from the `model` and `data` sections of an ml_collections config (as the original's
`MerlotReserve.from_config` copies `data` into `model`); unknown keys are ignored there so the
data pipeline can keep its own keys in the same section.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax

# The special token ids (spec §4) have one definition, next to the tokenizer.
from data_pipeline.tokenizer import (  # noqa: F401
    AUDIOSPAN,
    END,
    LTOVPOOL,
    MASK,
    MASKAUDIO,
    START,
)
from data_pipeline.tokenizer import PAD as PADDING  # noqa: F401
from mreserve.attention import SCHEDULES


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    # Towers (spec §0, §1). Defaults are the base model.
    hidden_size: int = 768
    size_per_head: int = 64
    vit_num_layers: int = 12
    audio_num_layers: int = 12
    span_num_layers: int = 4
    joint_num_layers: int = 12
    output_grid: tuple[int, int] = (12, 20)
    vit_patch_size: int = 16
    vit_pooling_ratio: int = 2
    audio_seq_length: int = 60
    audio_patch_size: int = 2
    audio_token_length: int = 6
    audio_num_features: int = 65
    text_span_length: int = 15
    vocab_size: int = 32768
    # Shapes of the pretraining batch (spec §2, §3.3).
    num_segments: int = 16
    num_segment_groups: int = 2
    num_audio_subsegments: int = 3
    lang_seq_len: int = 160
    seq_len: int = 640
    mask_rate: float = 0.25
    num_text_spans_to_include: int = 48
    text_span_budget: int = 38
    augment_video_src_idx_prob: float = 0.1
    # Engineering switches (not in the original).
    dtype: str = 'float32'
    param_dtype: str = 'float32'
    scan_layers: bool = False
    remat: str = 'none'
    attention: str = 'auto'       # attention schedule: auto, xla or blocked (mreserve/attention.py)
    batch_derived_rng: bool = False

    def __post_init__(self):
        if self.remat not in ('none', 'full') and not hasattr(jax.checkpoint_policies,
                                                             self.remat):
            raise ValueError(f'model.remat={self.remat!r}: use none, full or a '
                             'jax.checkpoint_policies name such as dots_saveable')
        if self.attention not in SCHEDULES:
            raise ValueError(f'model.attention={self.attention!r}: use one of {SCHEDULES}')
        if self.hidden_size % self.size_per_head:
            raise ValueError(f'model.hidden_size={self.hidden_size} is not a multiple of '
                             f'size_per_head={self.size_per_head}')

    @property
    def num_heads(self) -> int:
        return self.hidden_size // self.size_per_head

    @property
    def patch_dim(self) -> int:
        return self.vit_patch_size * self.vit_patch_size * 3

    @property
    def pooled_grid(self) -> tuple[int, int]:
        h, w = self.output_grid
        return h // self.vit_pooling_ratio, w // self.vit_pooling_ratio

    @property
    def tokens_per_frame(self) -> int:
        ph, pw = self.pooled_grid
        return ph * pw

    @property
    def audio_tokens(self) -> int:
        """Transformer tokens per audio sub-segment (30): the Conv halves 60 frames."""
        return self.audio_seq_length // self.audio_patch_size

    @property
    def segments_per_group(self) -> int:
        return self.num_segments // self.num_segment_groups

    @property
    def num_audio_spans(self) -> int:
        return self.num_segments * self.num_audio_subsegments

    @property
    def num_targets(self) -> int:
        """Span targets per type and example: int(n_audio_spans * mask_rate)."""
        return int(self.num_audio_spans * self.mask_rate)

    def replace(self, **kw) -> ModelConfig:
        return dataclasses.replace(self, **kw)

    @classmethod
    def from_config(cls, config: Any) -> ModelConfig:
        """From a config with `model` and `data` sections (ConfigDicts or dicts). The compute
        dtype defaults to `train.dtype`; keys that are not fields here are ignored."""
        values: dict[str, Any] = {}
        if 'train' in config and 'dtype' in config['train']:
            values['dtype'] = config['train']['dtype']
        for section in ('data', 'model'):
            if section in config:
                values.update(dict(config[section].items()))
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in values.items() if k in names}
        if 'output_grid' in kwargs:
            kwargs['output_grid'] = tuple(int(v) for v in kwargs['output_grid'])
        return cls(**kwargs)
