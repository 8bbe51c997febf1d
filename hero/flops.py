"""Analytic training FLOPs of one HERO pretraining example (one video) per task (spec §1, §2).

Counts the matmuls of the forward pass (2 FLOPs per multiply-add) and of the backward pass:
twice the forward for a product whose two operands both need gradients, once more for a
product with data (the MFM-NCE targets) on one side. Counted: the f-TRM frame projection
(img_linear), every Q/K/V/output/FFN dense and the attention score and value products of the
f-TRM and t-TRM layers over the full padded sequences, frame_transform, and each task's heads:
MLM's LM head (dense + tied decoder over the scored positions), feat_regress and the NCE logits
against the group's targets and predictions, FOM's classifier, and VSM's query encoder
(text-only f-TRM pass, QueryFeatEncoder), local span similarity and the global cosine scores
against every video of the batch. Not counted: layer norms, softmax, activations, gathers,
scatters, the 5-tap span convolutions, the optimizer, and remat recomputation (model FLOPs, not
hardware FLOPs). Used by the Task's `flops_per_example` and benchmarks/hero_step.py.
"""
from __future__ import annotations

from hero.config import HeroConfig


def layer_flops(c: HeroConfig, tokens: int, length: int, ffn: bool = True) -> float:
    """Forward FLOPs of one BERT layer over `tokens` tokens in sequences of `length` (the
    QueryFeatEncoder's attention block has no FFN)."""
    h = c.hidden_size
    dense = 2 * tokens * h * (4 * h + (2 * c.intermediate_size if ffn else 0))
    attention = 2 * 2 * tokens * length * h           # q.k scores and probs.v
    return float(dense + attention)


def subtitle_pass_flops(c: HeroConfig, sequences: int, frames: int, text: int) -> float:
    """f-TRM over `sequences` sequences of [frames | text]: frame projection + layers."""
    length = frames + text
    return (2.0 * sequences * frames * c.vfeat_dim * c.hidden_size
            + c.f_layers * layer_flops(c, sequences * length, length))


def video_pass_flops(c: HeroConfig, sizes: dict) -> float:
    """encode_video of one video: f-TRM per subtitle, frame_transform, t-TRM."""
    frames = sizes['frames']
    return (subtitle_pass_flops(c, sizes['subs_per_video'], sizes['frames_per_sub'],
                                sizes['txt_len'])
            + 2.0 * frames * c.vfeat_dim * c.hidden_size
            + c.c_layers * layer_flops(c, frames, frames))


def forward_flops_by_task(c: HeroConfig, sizes: dict, global_batch: int,
                          max_predictions: int = 0, nce_group_size: int = 0) -> dict:
    """{task: {part: (forward FLOPs, backward / forward ratio)}} per video.

    `global_batch` is the number of videos one loss call sees (the micro-batch): the VSM
    scores and the MFM-NCE groups span it.
    `sizes` is hero.task.batch_sizes(config); MLM examples are the video's subtitles (per-video
    layout of the store reader), scored at `max_predictions` text positions each (0 = all).
    """
    h, d, length = c.hidden_size, c.vfeat_dim, sizes['frames']
    video = video_pass_flops(c, sizes)
    subs, text = sizes['subs_per_video'], sizes['txt_len']
    scored = subs * min(max_predictions or text, text)
    regress = 2.0 * length * (h * h + h * d)
    group = min(global_batch, nce_group_size) if nce_group_size else global_batch
    nce_candidates = length * group
    queries, query_len = sizes['queries_per_video'], sizes['query_len']
    query_tokens = queries * query_len
    query = (c.f_layers * layer_flops(c, query_tokens, query_len)
             + 2.0 * query_tokens * h * h                                # query_input_proj
             + layer_flops(c, query_tokens, query_len, ffn=False)
             + 2.0 * query_tokens * h)                                   # modular pooling
    local = 2.0 * queries * h * h + 2.0 * queries * length * h          # video_query_linear
    scores = 2.0 * queries * global_batch * length * h                   # cosine, all videos
    return {
        'mlm': {'f_trm': (subtitle_pass_flops(c, subs, sizes['frames_per_sub'], text), 2.0),
                'lm_head': (2.0 * scored * h * (h + c.logit_vocab_size), 2.0)},
        'mfm-nce': {'video': (video, 2.0), 'feat_regress': (regress, 2.0),
                    'nce_targets': (2.0 * length * nce_candidates * d, 1.0),
                    'nce_predictions': (2.0 * length * nce_candidates * d, 2.0)},
        'mffr': {'video': (video, 2.0), 'feat_regress': (regress, 2.0)},
        'fom': {'video': (video, 2.0),
                'fom_output': (2.0 * length * 2 * h * (h + c.fom_num_classes), 2.0)},
        'vsm': {'video': (video, 2.0), 'query': (query, 2.0), 'local': (local, 2.0),
                'scores': (scores, 2.0)},
    }


def train_flops_by_task(c: HeroConfig, sizes: dict, global_batch: int, max_predictions: int = 0,
                        nce_group_size: int = 0) -> dict[str, float]:
    """Forward + backward matmul FLOPs per video of each task."""
    parts = forward_flops_by_task(c, sizes, global_batch, max_predictions, nce_group_size)
    return {task: sum(f * (1.0 + ratio) for f, ratio in by_part.values())
            for task, by_part in parts.items()}


def mixture_flops_per_example(config, sizes: dict) -> float:
    """Expected train FLOPs per video of one optimizer step of the config's task mixture
    (each step runs one task, drawn with the config's ratios); `sizes` as above."""
    videos = int(config.train.global_batch) // int(config.train.micro_batches)  # per loss call
    per_task = train_flops_by_task(HeroConfig.from_config_dict(config.model), sizes,
                                   videos, int(config.mlm.max_predictions),
                                   int(config.mfm.nce_group_size))
    names, ratios = tuple(config.tasks.names), tuple(config.tasks.ratios)
    return sum(per_task[n] * r for n, r in zip(names, ratios)) / sum(ratios)
