"""Analytic training FLOPs of one MERLOT Reserve pretraining example (spec §0, §1, §2.3).

Counts the matmuls of the forward pass (2 FLOPs per multiply-add) and multiplies by 3 for
forward + backward (the backward pass costs two matmuls per forward matmul). Counted: every
Dense/Projection/Conv of the four towers and the joint transformer (qkv, attention output,
MLP, CLS projection, input embeddings), the attention score and value products over the full
(padded) sequence, the attention pooling of the vision and audio towers, the `head` on every
joint position, and the contrastive logits against the global batch. Not counted: layer norms,
softmax, activations, embedding lookups and gathers (no matmuls), and recomputation by remat
(model FLOPs, not hardware FLOPs). Used by the Task's `flops_per_example` and the benchmarks.
"""
from __future__ import annotations

from mreserve.model_config import ModelConfig
from mreserve.synthetic import SEQUENCE_KEYS, batch_shapes


def encoder_flops(c: ModelConfig, n_seqs: int, length: int, layers: int, cls: bool) -> float:
    """Forward FLOPs of a TransformerEncoder over n_seqs sequences of `length` tokens
    (`length` includes the CLS token when there is one)."""
    h = c.hidden_size
    dense = 2 * length * h * (3 * h + h + 4 * h + 4 * h)   # qkv, attn_proj, mlp in, mlp out
    attention = 2 * 2 * length * length * h                # q.k scores and weights.v
    per_seq = layers * (dense + attention) + (2 * h * h if cls else 0)   # cls_proj
    return float(n_seqs * per_seq)


def attention_pool_flops(c: ModelConfig, n_windows: int, window: int) -> float:
    """AttentionPool over n_windows windows of `window` tokens (one query per window)."""
    h = c.hidden_size
    proj = 2 * h * h * (1 + 2 * window + 1)                # query, key, value, out
    attention = 2 * 2 * window * h
    return float(n_windows * (proj + attention))


def joint_rows(c: ModelConfig) -> int:
    """Joint-transformer sequences (of c.seq_len positions) per example."""
    shapes = batch_shapes(c, 1)
    return sum(shapes[key][0][1] for key in SEQUENCE_KEYS)


def contrastive_flops(c: ModelConfig, global_batch: int) -> float:
    """Forward FLOPs of the logits of the three losses, per example, against the global batch
    (both directions; text_to_audio x -> y also sees the extra audio CLS negatives)."""
    h, n = c.hidden_size, global_batch
    frames, spans, n_trg = c.num_segments, c.num_text_spans_to_include, c.num_targets
    imgs = 2 * (2 * frames * frames * n * h)
    audio = 2 * n_trg * c.num_audio_spans * n * h + 2 * n_trg * n_trg * n * h
    span = 2 * (2 * spans * spans * n * h)
    return float(imgs + audio + span)


def forward_flops_by_part(c: ModelConfig, global_batch: int = 1) -> dict[str, float]:
    """Forward matmul FLOPs per example, by part of the model."""
    h = c.hidden_size
    frames = c.num_segments
    patches = c.output_grid[0] * c.output_grid[1]
    n_audio = c.num_audio_spans
    audio_tokens = c.audio_tokens
    return {
        'vision': (2.0 * frames * patches * c.patch_dim * h
                   + encoder_flops(c, frames, patches + 1, c.vit_num_layers, True)
                   + attention_pool_flops(c, frames * patches // c.vit_pooling_ratio ** 2,
                                          c.vit_pooling_ratio ** 2)),
        'audio': (2.0 * n_audio * audio_tokens * c.audio_patch_size * c.audio_num_features * h
                  + encoder_flops(c, n_audio, audio_tokens + 1, c.audio_num_layers, True)
                  + attention_pool_flops(c, n_audio * audio_tokens // c.audio_token_length,
                                         c.audio_token_length)),
        'joint': (encoder_flops(c, joint_rows(c), c.seq_len, c.joint_num_layers, False)
                  + 2.0 * joint_rows(c) * c.seq_len * h * h),          # + head
        'span': encoder_flops(c, c.num_text_spans_to_include, c.text_span_length + 1,
                              c.span_num_layers, True),
        'contrastive': contrastive_flops(c, global_batch),
    }


def forward_flops_per_example(c: ModelConfig, global_batch: int = 1) -> float:
    return sum(forward_flops_by_part(c, global_batch).values())


def train_flops_per_example(c: ModelConfig, global_batch: int = 1) -> float:
    """Forward + backward matmul FLOPs per example (3x the forward)."""
    return 3.0 * forward_flops_per_example(c, global_batch)
