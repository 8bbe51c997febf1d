"""Zero-shot use of a converted checkpoint, like the original `PretrainedMerlotReserve` (spec §6.1).

    model = PretrainedMerlotReserve.from_converted(DIR, output_grid=(18, 32),
                                                   tokenizer='mreserve_lowercase_bpe.json')
    labels = model.get_label_space(['making coffee', 'archery'])
    h = model.embed_video(images, audio_clips, tokens, subseg_idxs)[tokens == MASK]
    probs = softmax(100 * h @ labels.T)

Any `MerlotReserve` method is available as an attribute, jitted with the params bound.
Unlike the original, the checkpoint is a local directory written by `mreserve.convert` (no
download), and any grid is accepted (the released weights were trained at 12x20, 18x32, 24x24).
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os
from typing import Any

import jax
import numpy as np

from mreserve.model_config import ModelConfig
from mreserve.modeling import MerlotReserve
from trainer.params_io import load_params


@dataclasses.dataclass
class PretrainedMerlotReserve:
    model: MerlotReserve
    params: Any
    tokenizer: Any = None   # anything with encode(str) -> list[int] (data_pipeline.tokenizer)

    @classmethod
    def from_converted(cls, directory: str, output_grid: tuple[int, int] | None = None,
                       tokenizer: Any = None, dtype: str = 'float32'
                       ) -> PretrainedMerlotReserve:
        with open(os.path.join(directory, 'config.json')) as f:
            saved = json.load(f)
        config = ModelConfig.from_config(saved).replace(
            dtype=dtype, scan_layers=bool(saved.get('scan_layers', False)))
        if output_grid is not None:
            config = config.replace(output_grid=tuple(output_grid))
        if isinstance(tokenizer, str | os.PathLike):
            from data_pipeline.tokenizer import load_tokenizer
            tokenizer = load_tokenizer(tokenizer)
        return cls(MerlotReserve(config), load_params(directory), tokenizer)

    @functools.cached_property
    def _jitted(self) -> dict[str, Any]:
        return {}

    def __getattr__(self, name: str):
        if name.startswith('_') or not callable(getattr(MerlotReserve, name, None)):
            raise AttributeError(name)
        if name not in self._jitted:
            method = getattr(MerlotReserve, name)
            self._jitted[name] = jax.jit(
                lambda params, *args: self.model.apply({'params': params}, *args,
                                                       method=method))
        return functools.partial(self._jitted[name], self.params)

    def get_label_space(self, options: list[str]) -> jax.Array:
        """Unit-normalised span embeddings [len(options), H] of the option strings (BPE,
        truncated/padded with 0 to `text_span_length` tokens)."""
        if self.tokenizer is None:
            raise ValueError('get_label_space needs a tokenizer (from_converted(tokenizer=...))')
        length = self.model.config.text_span_length
        spans = np.zeros((len(options), length), np.int32)
        for i, option in enumerate(options):
            ids = self.tokenizer.encode(option)[:length]
            spans[i, :len(ids)] = ids
        return self.embed_text_spans_only(spans)
