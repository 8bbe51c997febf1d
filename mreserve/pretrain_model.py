"""The pretraining forward pass (`MerlotReservePretrainer.__call__`, spec §1.8, §2.2).

One call encodes every frame and audio sub-segment, builds the six joint sequences
(audio2text, audio_text_matching, random_text, text2audio, in sorted key order), runs them
through the joint transformer in one batch, and returns the (x, y) pairs of the three
contrastive losses, already normalised and scaled (mreserve/losses.py consumes them).

Randomness (video-source split augmentation, Gumbel top-k span selection) comes from the
`rng` argument (the engine passes `fold_in(seed, step)`). With `batch_derived_rng` the key is
built from the batch as in the original (sum of `audio2text/text_ptr` as uint32, used as both
key words), which makes the reference vectors reproducible but repeats the same randomness
every step (the original's quirk, spec §1.8).
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from mreserve.losses import scale_and_normalize
from mreserve.model_config import LTOVPOOL, MASK, MASKAUDIO
from mreserve.modeling import MerlotReserve

SEQUENCE_NAMES = ('audio2text', 'audio_text_matching', 'random_text', 'text2audio')
MULTIMODAL_BONUS = math.log(4.0)   # span-selection weight of T2A / A2T spans (4x)
VALID_BONUS = 1e6


def batch_derived_key(text_ptr: jax.Array) -> jax.Array:
    """The original's PRNG key: sum(text_ptr as uint32), repeated twice (raw uint32 key)."""
    total = jnp.sum(text_ptr.astype(jnp.uint32), dtype=jnp.uint32)
    return jnp.stack([total, total])


def augment_video_src_idx(video_src_idx: jax.Array, key: jax.Array, prob: float) -> jax.Array:
    """Split each group sequence [N, S] with probability `prob` at a point in 1..S-1: the
    segments after it get their video id offset by 4*S so the halves cannot attend to each
    other. One uniform draw per row decides both whether (u > 1 - prob, as in the original)
    and where (the position of u inside the firing interval) to split."""
    n_rows, n_seg = video_src_idx.shape
    u = jax.random.uniform(key, (n_rows,))
    fire = u > 1.0 - prob
    point = 1 + jnp.floor((u - (1.0 - prob)) / prob * (n_seg - 1)).astype(jnp.int32)
    point = jnp.clip(point, 1, max(n_seg - 1, 1))
    after = jnp.arange(n_seg)[None, :] >= point[:, None]
    return video_src_idx + jnp.where(fire[:, None] & after, 4 * n_seg, 0)


def one_hot_gather(values: jax.Array, select: jax.Array) -> jax.Array:
    """values [B, L, H], select [B, K, L] bool -> [B, K, H] (sum of the selected positions)."""
    return jnp.einsum('bkl,blh->bkh', select.astype(values.dtype), values)


class MerlotReservePretrainer(MerlotReserve):
    """MerlotReserve plus the pretraining forward pass."""

    def _random_keys(self, batch, rng):
        if self.config.batch_derived_rng:
            rng = batch_derived_key(batch['audio2text/text_ptr'])
        elif rng is None:
            raise ValueError('the pretraining forward needs an rng (or batch_derived_rng=True)')
        return jax.random.split(rng, 3)

    def _joint_sequences(self, batch, vision, audio, keys):
        """Builds the four kinds of joint sequence; returns {name: (x, coords, mask)}."""
        c = self.config
        batch_size = batch['images'].shape[0]
        groups, spg = c.num_segment_groups, c.segments_per_group
        audio_spans = audio['seq_attnpool'].reshape(batch_size, c.num_audio_spans, -1,
                                                    c.hidden_size)
        frames = vision['seq_attnpool'].reshape(batch_size * groups, -1, c.hidden_size)
        video_src = batch['video_src_index'].reshape(batch_size * groups, spg)

        def rows(name):
            flat = lambda a: a.reshape(-1, a.shape[-1])
            return flat(batch[name]), flat(batch[f'{name}/audio_ptr'])

        seqs = {}
        for key, name in zip(keys[:2], ('audio2text', 'text2audio')):
            tokens, ptr = rows(name)
            per_row = tokens.shape[0] // (batch_size * groups)
            vid = augment_video_src_idx(video_src, key, c.augment_video_src_idx_prob)
            self.sow('intermediates', f'video_src_aug/{name}', vid)
            spans = None
            if name == 'audio2text':
                spans = jnp.repeat(audio_spans, groups * per_row, axis=0)
            seqs[name] = self.prepare_multimodal_inputs(
                tokens, (ptr // c.num_audio_subsegments) % spg,
                vision_input=jnp.repeat(frames, per_row, 0), audio_spans=spans,
                audio_pointers=ptr, padding_len=c.seq_len,
                video_src_idx=jnp.repeat(vid, per_row, 0))
        tokens, ptr = rows('audio_text_matching')
        per_row = tokens.shape[0] // batch_size
        seqs['audio_text_matching'] = self.prepare_multimodal_inputs(
            tokens, jnp.cumsum(tokens == LTOVPOOL, axis=-1),
            audio_spans=jnp.repeat(audio_spans, per_row, 0), audio_pointers=ptr,
            padding_len=c.seq_len)
        tokens, _ = rows('random_text')
        seqs['random_text'] = self.prepare_multimodal_inputs(
            tokens, jnp.zeros_like(tokens), padding_len=c.seq_len)
        return seqs

    def __call__(self, batch, rng=None):
        """batch: the per-step batch dict (spec §3.3 keys, leading axis = examples).

        Returns {'imgs_to_audio': {x, y}, 'text_to_audio': {x, y, y_extra},
                 'stuff_to_span': {x, y, _sources}}, scaled by the contrastive scales.
        """
        c = self.config
        dt = jnp.dtype(c.dtype)
        batch = {k: jnp.asarray(v) for k, v in batch.items()}
        keys = self._random_keys(batch, rng)
        batch_size = batch['images'].shape[0]
        vision = self.vision_encoder(
            batch['images'].reshape(batch_size * c.num_segments, -1, c.patch_dim))
        audio = self.audio_encoder(batch['audio_clips'].reshape(
            batch_size * c.num_audio_spans, c.audio_seq_length, -1))
        for name in ('cls', 'seq_attnpool'):
            self.sow('intermediates', f'vision/{name}', vision[name])
            self.sow('intermediates', f'audio/{name}', audio[name])

        seqs = self._joint_sequences(batch, vision, audio, keys)
        x, coords, mask = (jnp.concatenate([seqs[n][i] for n in SEQUENCE_NAMES], 0)
                           for i in range(3))
        out = self.run_joint(x, coords, mask)
        outputs, start = {}, 0
        for name in SEQUENCE_NAMES:
            n = seqs[name][0].shape[0]
            outputs[name] = out[start:start + n].reshape(batch_size, -1, out.shape[-1])
            start += n

        def tokens_of(name, length):
            """Tokens and pointers of the first `length` positions of each row, per example."""
            cut = lambda a: a.reshape(-1, a.shape[-1])[:, :length].reshape(batch_size, -1)
            return (cut(batch[name]), cut(batch[f'{name}/audio_ptr']),
                    cut(batch[f'{name}/text_ptr']))

        def outputs_of(name, length):
            o = outputs[name].reshape(-1, c.seq_len, out.shape[-1])[:, :length]
            return o.reshape(batch_size, -1, out.shape[-1])

        scales = self.contrastive_scales
        preds = {}

        # imgs_to_audio: the k-th LTOVPOOL of audio_text_matching <-> frame k's ViT CLS.
        tok, _, _ = tokens_of('audio_text_matching', c.seq_len)
        is_pool = tok == LTOVPOOL
        pool_idx = jnp.cumsum(is_pool, -1) - 1
        select = is_pool[:, None, :] & (pool_idx[:, None, :] ==
                                        jnp.arange(c.num_segments)[None, :, None])
        preds['imgs_to_audio'] = {
            'x': scale_and_normalize(one_hot_gather(outputs['audio_text_matching'], select),
                                     scales[0], dt),
            'y': scale_and_normalize(vision['cls'].reshape(batch_size, c.num_segments, -1),
                                     scales[0], dt)}

        # text_to_audio: MASKAUDIO outputs of text2audio <-> audio CLS of the masked rows;
        # the other rows' CLS are extra negatives. Targets in ascending row order.
        tok, ptr, _ = tokens_of('text2audio', c.lang_seq_len)
        t2a_out = outputs_of('text2audio', c.lang_seq_len)
        rows = jnp.arange(c.num_audio_spans)
        select = (tok == MASKAUDIO)[:, None, :] & (ptr[:, None, :] == rows[None, :, None])
        x_rows = one_hot_gather(t2a_out, select)
        order = jnp.argsort(~select.any(-1), axis=-1, stable=True)
        take = lambda a, idx: jnp.take_along_axis(a, idx[..., None], axis=1)
        audio_cls = audio['cls'].reshape(batch_size, c.num_audio_spans, -1)
        n_trg = c.num_targets
        preds['text_to_audio'] = {
            'x': scale_and_normalize(take(x_rows, order[:, :n_trg]), scales[1], dt),
            'y': scale_and_normalize(take(audio_cls, order[:, :n_trg]), scales[1], dt),
            'y_extra': scale_and_normalize(take(audio_cls, order[:, n_trg:]), scales[1], dt)}

        preds['stuff_to_span'] = self._span_preds(batch, tokens_of, outputs_of, keys[2])
        return preds

    def _span_preds(self, batch, tokens_of, outputs_of, key):
        """stuff_to_span: MASK outputs <-> span-encoder CLS for a Gumbel top-k subset."""
        c = self.config
        dt = jnp.dtype(c.dtype)
        text_spans = batch['text_spans']
        batch_size, n_spans = text_spans.shape[:2]
        span_ids = jnp.arange(n_spans)
        x_spans, mask_count, multimodal_count = 0.0, 0, 0
        for name, length in (('text2audio', c.lang_seq_len), ('audio2text', c.lang_seq_len),
                             ('random_text', c.seq_len)):
            tok, _, tptr = tokens_of(name, length)
            select = (tok == MASK)[:, None, :] & (tptr[:, None, :] == span_ids[None, :, None])
            x_spans = x_spans + one_hot_gather(outputs_of(name, length), select)
            count = select.sum(-1)
            mask_count = mask_count + count
            if name != 'random_text':
                multimodal_count = multimodal_count + count
        is_valid = (text_spans != 0).any(-1) & (mask_count > 0)
        score = (VALID_BONUS * is_valid + MULTIMODAL_BONUS * multimodal_count).reshape(-1)
        score = score + jax.random.gumbel(key, score.shape)
        n_keep = min(c.num_text_spans_to_include * batch_size, score.shape[0])
        _, idx = jax.lax.top_k(score, n_keep)
        self.sow('intermediates', 'span_select_idx', idx)

        n_trg = c.num_targets
        source = jnp.where(span_ids < n_trg, 0, jnp.where(span_ids < 2 * n_trg, 1, 2))
        source = jnp.where(is_valid, source[None], -1).reshape(-1)[idx]
        chosen = text_spans.reshape(-1, text_spans.shape[-1])[idx]
        self.sow('intermediates', 'span/x_isvalid', chosen != 0)
        span_cls = self.span_cls(chosen)
        self.sow('intermediates', 'span/cls', span_cls)
        # A selected invalid span (empty text or its MASK truncated away) gets x = 0.
        x = jnp.where(is_valid[..., None], x_spans, 0.0).reshape(-1, x_spans.shape[-1])[idx]
        scale = self.contrastive_scales[2]
        return {'x': scale_and_normalize(x, scale, dt),
                'y': scale_and_normalize(span_cls, scale, dt),
                '_sources': source.astype(jnp.int32)}
