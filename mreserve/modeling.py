"""MERLOT Reserve: the four towers, the joint transformer and the zero-shot API (spec §1, §6.2).

The parameter tree is the original's (spec §1.6, §10.3): `vision_encoder`, `audio_encoder`,
`token_encoder/Embed_0`, `span_encoder`, `joint_transformer`, `head`, `contrastive_scales`,
so converted original checkpoints load directly. Intermediates that the reference vectors pin
are `sow`n into the 'intermediates' collection (apply with `mutable=['intermediates']`).
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mreserve.layers import (
    AttentionPool,
    TransformerEncoder,
    constrain,
    dense,
    kernel_init,
    l2_normalize,
    named,
    rotary_coords_1d,
    rotary_coords_2d,
)
from mreserve.model_config import AUDIOSPAN, ModelConfig

SEGMENT_SCALE = 16.0     # rotary coordinate of a segment index
TOKEN_SCALE = 1024.0     # rotary coordinate of a token index
SPAN_SCALE = 16.0        # span-encoder coordinates (1..15)/16


def _encoder(c: ModelConfig, num_layers: int, add_cls_token: bool, name: str):
    return TransformerEncoder(
        hidden_size=c.hidden_size, size_per_head=c.size_per_head, num_layers=num_layers,
        add_cls_token=add_cls_token, scan_layers=c.scan_layers, remat=c.remat,
        attention=c.attention,
        dtype=jnp.dtype(c.dtype), param_dtype=jnp.dtype(c.param_dtype), name=name)


class VisionTransformer(nn.Module):
    """Pre-patchified frames [..., h*w, 768] -> seq, cls and 2x2 attention-pooled tokens."""
    config: ModelConfig

    @nn.compact
    def __call__(self, imgs):
        c = self.config
        dt, pdt = jnp.dtype(c.dtype), jnp.dtype(c.param_dtype)
        lead = imgs.shape[:-2]
        imgs = imgs.reshape((-1,) + imgs.shape[-2:])
        x = dense(c.hidden_size, 'embedding', 'feat', 'embed', dt, pdt)(imgs.astype(dt))
        h, w = c.output_grid
        coords = jnp.asarray(rotary_coords_2d(h, w))[None]
        out = _encoder(c, c.vit_num_layers, True, 'transformer')(x, coords)
        seq = out['seq']
        r = c.vit_pooling_ratio
        windows = seq.reshape(-1, h // r, r, w // r, r, c.hidden_size)
        windows = windows.transpose(0, 1, 3, 2, 4, 5).reshape(-1, r * r, c.hidden_size)
        pooled = AttentionPool(c.hidden_size, c.size_per_head, dt, pdt, name='seq_attnpool')(
            windows).reshape(seq.shape[0], -1, c.hidden_size)
        return {'seq': seq.reshape(lead + seq.shape[1:]),
                'cls': out['cls'].reshape(lead + (c.hidden_size,)),
                'seq_attnpool': pooled.reshape(lead + pooled.shape[1:])}


class AudioTransformer(nn.Module):
    """Audio sub-segments [..., 60, 65] -> seq (30 tokens), cls and 6 pooled tokens."""
    config: ModelConfig

    @nn.compact
    def __call__(self, audio_clips):
        c = self.config
        dt, pdt = jnp.dtype(c.dtype), jnp.dtype(c.param_dtype)
        lead = audio_clips.shape[:-2]
        x = audio_clips.reshape((-1,) + audio_clips.shape[-2:]).astype(dt)
        x = nn.Conv(c.hidden_size, kernel_size=(c.audio_patch_size,),
                    strides=(c.audio_patch_size,), padding='VALID', dtype=dt, param_dtype=pdt,
                    kernel_init=named(kernel_init, 'conv', 'feat', 'embed'),
                    bias_init=named(nn.initializers.zeros_init(), 'embed'),
                    name='embedding')(x)
        n = c.audio_tokens
        coords = jnp.asarray(rotary_coords_1d(n) / n)[None, :, None]
        out = _encoder(c, c.audio_num_layers, True, 'transformer')(x, coords)
        seq = out['seq']
        windows = seq.reshape(-1, n // c.audio_token_length, c.hidden_size)
        pooled = AttentionPool(c.hidden_size, c.size_per_head, dt, pdt, name='seq_attnpool')(
            windows).reshape(seq.shape[0], -1, c.hidden_size)
        return {'seq': seq.reshape(lead + seq.shape[1:]),
                'cls': out['cls'].reshape(lead + (c.hidden_size,)),
                'seq_attnpool': pooled.reshape(lead + pooled.shape[1:])}


class TokenEncoder(nn.Module):
    """The shared token table; the nn.Embed inside is named `Embed_0` as in the original."""
    config: ModelConfig

    @nn.compact
    def __call__(self, tokens):
        c = self.config
        init = (nn.initializers.normal(0.02) if c.hidden_size <= 768
                else nn.initializers.xavier_uniform())
        return nn.Embed(c.vocab_size, c.hidden_size, dtype=jnp.dtype(c.dtype),
                        param_dtype=jnp.dtype(c.param_dtype),
                        embedding_init=named(init, 'vocab', 'embed'), name='Embed_0')(tokens)


class SpanTransformer(nn.Module):
    """Embedded span tokens [N, L<16, H] + validity -> CLS [N, H]."""
    config: ModelConfig

    @nn.compact
    def __call__(self, x, is_valid):
        c = self.config
        coords = jnp.asarray(rotary_coords_1d(x.shape[1], center_origin=False) / SPAN_SCALE)
        out = _encoder(c, c.span_num_layers, True, 'transformer')(
            x, coords[None, :, None], is_valid=is_valid)
        return out['cls']


def joint_rotary_coords(token_segment_idx: jax.Array, n_frames: int,
                        pooled_grid: tuple[int, int]) -> jax.Array:
    """[B, L + n_frames * ph * pw, 4] coords (h, w, segment/16, token/1024) (spec §1.7)."""
    batch, length = token_segment_idx.shape
    seg = token_segment_idx.astype(jnp.float32) / SEGMENT_SCALE
    tok = jnp.broadcast_to(jnp.arange(1, length + 1, dtype=jnp.float32) / TOKEN_SCALE,
                           (batch, length))
    zeros = jnp.zeros((batch, length), jnp.float32)
    text = jnp.stack([zeros, zeros, seg, tok], -1)
    if n_frames == 0:
        return text
    grid = rotary_coords_2d(*pooled_grid)
    frame = np.repeat(np.arange(n_frames, dtype=np.float32), grid.shape[0]) / SEGMENT_SCALE
    vision = np.concatenate([np.tile(grid, (n_frames, 1)), frame[:, None],
                             np.zeros_like(frame)[:, None]], -1)
    vision = jnp.broadcast_to(jnp.asarray(vision), (batch,) + vision.shape)
    return jnp.concatenate([text, vision], 1)


class MerlotReserve(nn.Module):
    """Towers + joint model. The methods mirror the original zero-shot API (spec §6.2)."""
    config: ModelConfig

    def setup(self):
        c = self.config
        dt, pdt = jnp.dtype(c.dtype), jnp.dtype(c.param_dtype)
        self.vision_encoder = VisionTransformer(c)
        self.audio_encoder = AudioTransformer(c)
        self.token_encoder = TokenEncoder(c)
        self.span_encoder = SpanTransformer(c)
        self.joint_transformer = _encoder(c, c.joint_num_layers, False, None)
        self.head = dense(c.hidden_size, None, 'embed', 'mlp', dt, pdt)
        self.contrastive_scales = self.param(
            'contrastive_scales', named(nn.initializers.ones_init(), 'classes'), (3,), pdt)

    # --- single towers ----------------------------------------------------------------------

    def span_cls(self, text_spans):
        """Span-encoder CLS [N, H] (not normalised); all-zero rows give an empty span."""
        is_valid = text_spans != 0
        return self.span_encoder(self.token_encoder(text_spans), is_valid)

    def embed_text_spans_only(self, text_spans):
        """text_spans [B, <=15] -> unit-normalised span CLS [B, H]."""
        cls = self.span_cls(text_spans)
        self.sow('intermediates', 'span/cls', cls)
        return l2_normalize(cls)

    def embed_audio_only(self, audio_clips):
        """audio_clips [..., 60, 65] -> unit-normalised audio CLS [..., H]."""
        return l2_normalize(self.audio_encoder(audio_clips)['cls'])

    def get_imgseq_only(self, imgs):
        """imgs [..., h*w, 768] -> pooled frame tokens [..., h*w/4, H] (not normalised)."""
        return self.vision_encoder(imgs)['seq_attnpool']

    def get_audioseq_only(self, audio_clips):
        """audio_clips [N, 60, 65] -> pooled audio tokens [N, 6, H] (not normalised)."""
        return self.audio_encoder(audio_clips)['seq_attnpool']

    # --- joint model ------------------------------------------------------------------------

    def prepare_multimodal_inputs(self, tokens, token_segment_idx, vision_input=None,
                                  audio_spans=None, audio_pointers=None, padding_len=None,
                                  video_src_idx=None):
        """Builds one joint sequence batch (spec §1.7).

        tokens/token_segment_idx/audio_pointers [B, L]; vision_input [B, n_frames * ph * pw, H];
        audio_spans [B, n_spans, 6, H]; video_src_idx [B, n_segments of this sequence].
        Returns x [B, L', H], rotary_coords [B, L', 4], attention_mask [B, L', L'].
        """
        c = self.config
        batch, length = tokens.shape
        x = self.token_encoder(tokens)
        if audio_spans is not None:
            is_audio = tokens == AUDIOSPAN
            sub_idx = (jnp.cumsum(is_audio.astype(jnp.int32), -1) - 1) % c.audio_token_length
            span_idx = jnp.maximum(audio_pointers, 0)
            flat = audio_spans.reshape(batch, -1, c.hidden_size)
            row = span_idx * c.audio_token_length + sub_idx
            audio_x = jnp.take_along_axis(flat, row[..., None], axis=1)
            x = jnp.where(is_audio[..., None], audio_x.astype(x.dtype), x)
        is_valid = tokens != 0
        n_frames = 0
        vid = None
        if video_src_idx is not None:
            vid = jnp.take_along_axis(video_src_idx, token_segment_idx, axis=1)
            vid = jnp.where(is_valid, vid, -1)
        if vision_input is not None:
            n_frames = vision_input.shape[1] // c.tokens_per_frame
            x = jnp.concatenate([x, vision_input.astype(x.dtype)], 1)
            is_valid = jnp.concatenate(
                [is_valid, jnp.ones(vision_input.shape[:2], bool)], 1)
            if vid is not None:
                vid = jnp.concatenate(
                    [vid, jnp.repeat(video_src_idx[:, :n_frames], c.tokens_per_frame, 1)], 1)
        coords = joint_rotary_coords(token_segment_idx, n_frames, c.pooled_grid)
        if padding_len is not None and padding_len > x.shape[1]:
            pad = padding_len - x.shape[1]
            x = jnp.pad(x, ((0, 0), (0, pad), (0, 0)))
            coords = jnp.pad(coords, ((0, 0), (0, pad), (0, 0)))
            is_valid = jnp.pad(is_valid, ((0, 0), (0, pad)))
            if vid is not None:
                vid = jnp.pad(vid, ((0, 0), (0, pad)), constant_values=-1)
        mask = is_valid[:, :, None] & is_valid[:, None, :]
        if vid is not None:
            mask &= vid[:, :, None] == vid[:, None, :]
        x = constrain(x, 'act_batch', 'act_len', 'act_embed')
        return x, coords, mask

    def run_joint(self, x, coords, mask):
        """Joint transformer + `head` on every position: [B, L, H] -> [B, L, H]."""
        self.sow('intermediates', 'joint/x', x)
        self.sow('intermediates', 'joint/rotary_coords', coords)
        self.sow('intermediates', 'joint/attention_mask', mask)
        seq = self.joint_transformer(x, coords, attention_mask=mask)['seq']
        self.sow('intermediates', 'joint/seq', seq)
        return self.head(seq)

    def embed_preencoded(self, imgs_enc, audio_enc, tokens, subseg_idxs):
        """The joint half of embed_video on pooled tower outputs: imgs_enc [B, S, h*w/4, H],
        audio_enc [B, 3S, 6, H] or None (no AUDIOSPAN tokens), tokens/subseg_idxs [B, L]
        -> unit-normalised head outputs of the L text/audio positions [B, L, H]."""
        c = self.config
        batch, length = tokens.shape
        x, coords, mask = self.prepare_multimodal_inputs(
            tokens, subseg_idxs // c.num_audio_subsegments,
            vision_input=imgs_enc.reshape(batch, -1, c.hidden_size),
            audio_spans=audio_enc, audio_pointers=subseg_idxs)
        out = self.run_joint(x, coords, mask)[:, :length]
        self.sow('intermediates', 'head_out', out)
        return l2_normalize(out)

    def batch_embed_video(self, images, audio_clips, tokens, subseg_idxs):
        """images [B, S, h*w, 768], audio_clips [B, 3S, 60, 65], tokens/subseg_idxs [B, L]
        -> unit-normalised head outputs of the L text/audio positions [B, L, H]."""
        vision = self.vision_encoder(images)
        audio = self.audio_encoder(audio_clips)
        for name in ('seq', 'cls', 'seq_attnpool'):
            self.sow('intermediates', f'vision/{name}', vision[name])
            self.sow('intermediates', f'audio/{name}', audio[name])
        return self.embed_preencoded(vision['seq_attnpool'], audio['seq_attnpool'], tokens,
                                     subseg_idxs)

    def embed_video(self, images, audio_clips, tokens, subseg_idxs):
        """One video: images [S, h*w, 768], audio_clips [3S, 60, 65], tokens [L] -> [L, H]."""
        return self.batch_embed_video(images[None], audio_clips[None], tokens[None],
                                      subseg_idxs[None])[0]

    def embed_preencoded_noaudio(self, imgs_enc, tokens, subseg_idxs):
        """One video from pooled frames [S, h*w/4, H] (get_imgseq_only) and text only."""
        return self.embed_preencoded(imgs_enc[None], None, tokens[None], subseg_idxs[None])[0]

    def embed_preencoded_audio(self, imgs_enc, audio_enc, tokens, subseg_idxs):
        """One video from pooled frames [S, h*w/4, H] and pooled audio [3S, 6, H]
        (get_audioseq_only)."""
        return self.embed_preencoded(imgs_enc[None], audio_enc[None], tokens[None],
                                     subseg_idxs[None])[0]

    def __call__(self, images, audio_clips, tokens, subseg_idxs, text_spans):
        """Touches every parameter (used by `init`): embed_video plus the span encoder."""
        return (self.batch_embed_video(images, audio_clips, tokens, subseg_idxs),
                self.embed_text_spans_only(text_spans), self.contrastive_scales)
