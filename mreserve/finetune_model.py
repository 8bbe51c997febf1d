"""MERLOT Reserve downstream heads (spec §7): multiple choice (TVQA, VCR) and classification.

Multiple choice as the original finetuning: every option is one joint sequence whose text ends
with a MASK token; the new head `proj` (Dense H -> 1, no bias, N(0, 0.01)) reads the joint
transformer's output at that MASK (the pretraining `head` and `span_encoder` are not used, so
they are not part of the finetuned tree; VCR never runs the audio tower, so it has none).
Frames are encoded once per example and shared by its options.

Classification (Kinetics, not in the original code, spec §7.3) reads the same MASK position
with `classifier` (Dense H -> num_classes) instead of `proj`.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from mreserve.layers import named
from mreserve.model_config import MASK, ModelConfig
from mreserve.modeling import MerlotReserve


def _at_mask(seq: jax.Array, tokens: jax.Array) -> jax.Array:
    """seq [N, L', H], tokens [N, L] -> output at the first MASK of each row [N, H] (zeros when
    a row has none)."""
    is_mask = tokens == MASK
    first = is_mask & (jnp.cumsum(is_mask.astype(jnp.int32), -1) == 1)
    return jnp.einsum('nl,nlh->nh', first.astype(seq.dtype), seq[:, :tokens.shape[1]])


class MerlotReserveDownstream(MerlotReserve):
    """MerlotReserve plus `proj` (multiple choice) or `classifier` (num_classes > 0)."""
    num_classes: int = 0

    def setup(self):
        super().setup()
        c = self.config
        pdt = jnp.dtype(c.param_dtype)
        if self.num_classes:
            self.classifier = nn.Dense(
                self.num_classes, dtype=jnp.dtype(c.dtype), param_dtype=pdt,
                kernel_init=named(nn.initializers.normal(0.01), 'embed', 'classes'),
                bias_init=named(nn.initializers.zeros_init(), 'classes'), name='classifier')
        else:
            self.proj = nn.Dense(1, use_bias=False, dtype=jnp.dtype(c.dtype), param_dtype=pdt,
                                 kernel_init=named(nn.initializers.normal(0.01), 'embed',
                                                   None), name='proj')

    def joint_at_mask(self, images, audio_clips, tokens, segment_idx, audio_ptr,
                      frame_offset: int = 0):
        """Joint-transformer output at the MASK token of every option sequence.

        images [B, S, h*w, 768] (frame j has segment id frame_offset + j); audio_clips
        [B, A, 60, 65] or None; tokens / segment_idx / audio_ptr [B, K, L] (audio_ptr indexes
        the A sub-segments, -1 elsewhere) -> [B, K, H].

        `frame_offset` frames of zeros are put in front of the frames so that the segment ids
        of text and frames line up (TVQA's option row is segment 0, its frames are 1..7); their
        tokens are cut out of the sequence before the joint transformer, as in the original.
        """
        c = self.config
        batch, options, length = tokens.shape
        frames = images.shape[1]
        vision = self.vision_encoder(images)['seq_attnpool']           # [B, S, tpf, H]
        vision = vision.reshape(batch, frames * c.tokens_per_frame, c.hidden_size)
        cut = frame_offset * c.tokens_per_frame
        if cut:
            vision = jnp.concatenate([jnp.zeros((batch, cut, c.hidden_size), vision.dtype),
                                      vision], 1)
        vision = jnp.repeat(vision, options, axis=0)
        audio = None
        if audio_clips is not None:
            audio = self.audio_encoder(audio_clips)['seq_attnpool']    # [B, A, 6, H]
            audio = jnp.repeat(audio, options, axis=0)
        flat = (batch * options, length)
        x, coords, mask = self.prepare_multimodal_inputs(
            tokens.reshape(flat), segment_idx.reshape(flat), vision_input=vision,
            audio_spans=audio, audio_pointers=audio_ptr.reshape(flat))
        if cut:
            keep = jnp.concatenate([jnp.arange(length), jnp.arange(length + cut, x.shape[1])])
            x, coords = x[:, keep], coords[:, keep]
            mask = mask[:, keep][:, :, keep]
        seq = self.joint_transformer(x, coords, attention_mask=mask)['seq']
        return _at_mask(seq, tokens.reshape(flat)).reshape(batch, options, c.hidden_size)

    def option_logits(self, images, audio_clips, tokens, segment_idx, audio_ptr,
                      frame_offset: int = 0):
        """Multiple choice: [B, K] logits, one per option sequence."""
        h = self.joint_at_mask(images, audio_clips, tokens, segment_idx, audio_ptr,
                               frame_offset)
        return self.proj(h)[..., 0].astype(jnp.float32)

    def class_logits(self, images, audio_clips, tokens, segment_idx, audio_ptr):
        """Classification: one sequence per example ([B, 1, L]) -> [B, num_classes]."""
        h = self.joint_at_mask(images, audio_clips, tokens, segment_idx, audio_ptr)
        return self.classifier(h[:, 0]).astype(jnp.float32)


def init_params(model: MerlotReserveDownstream, rng: jax.Array, batch: dict, method: str,
                **kwargs):
    """Boxed params of `model` traced on `batch` (an example batch of the task)."""
    return model.init(rng, *batch_inputs(batch), method=method, **kwargs)['params']


def batch_inputs(batch: dict):
    """(images, audio_clips or None, tokens, segment_idx, audio_ptr) of a task batch."""
    return (batch['images'], batch.get('audio_clips'), batch['tokens'], batch['segment_idx'],
            batch['audio_ptr'])


def config_of(config) -> ModelConfig:
    return ModelConfig.from_config(config)
