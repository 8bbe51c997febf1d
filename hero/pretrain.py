"""HERO pretraining tasks: forward passes, losses and metrics of MLM, MFM-NCE, MFFR, FOM, VSM.

Each `*_outputs` function returns what the original model returns with `compute_loss=True`
(per-item terms, spec §2), each `*_loss` function reduces those terms the way the original
training loop does and returns `(loss, metrics)`. Batches use the layout of hero/batch_layout.py.

Reductions (spec §2, §7.2): MLM, MFM-NCE and FOM average over their targets; MFFR averages the
per-frame L2 distance; VSM averages over queries in training (the local term only when a uniform
draw exceeds `drop_svmr_prob`) and, in eval mode, sums the span CE and keeps per-query hinge
vectors (`vsm_eval_terms`).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from hero.modeling import VIDEO_KEYS, HeroModel
from hero.vsm import VsmSettings, ranking_terms, span_ce, video_query_scores


def _video(batch):
    return {k: batch[k] for k in VIDEO_KEYS}


def _apply(model, params, fn, rng, deterministic, *args):
    rngs = None if deterministic else {'dropout': rng}
    return model.apply({'params': params}, *args, method=fn, rngs=rngs)


def cross_entropy(logits, labels):
    """Per-item CE; entries with label -1 hold a meaningless value that callers mask out."""
    logits = logits.astype(jnp.float32)
    picked = jnp.take_along_axis(logits, jnp.maximum(labels, 0)[..., None], axis=-1)[..., 0]
    return jax.nn.logsumexp(logits, axis=-1) - picked


def masked_mean(values, valid):
    valid = valid.astype(jnp.float32)
    return jnp.sum(values * valid) / jnp.maximum(jnp.sum(valid), 1.0)


# ----------------------------------------------------------------------------------------- MLM
def mlm_outputs(model: HeroModel, params, batch, rng, deterministic: bool,
                max_predictions: int = 0):
    """LM logits at (up to `max_predictions` per row, 0 = all) masked text positions.

    Dense static-shape form of the original's boolean gather: the masked positions of each row
    are moved to the front (stable, so row-major order is kept) and the first K are scored.
    Returns logits (N, K, V), labels (N, K) with -1 where there is no target, ce (N, K).
    """
    frames = batch['frame_feats'].shape[1]
    labels = batch['txt_labels']
    k = max_predictions or labels.shape[1]
    order = jnp.argsort(labels < 0, axis=1, stable=True)[:, :k]
    picked_labels = jnp.take_along_axis(labels, order, axis=1)

    def forward(module, b):
        h = module.encode_subtitles(b['frame_feats'], b['frame_mask'], b['txt_ids'],
                                    b['txt_mask'], deterministic)[:, frames:]
        h = jnp.take_along_axis(h, order[..., None], axis=1)
        return module.mlm_logits(h)
    logits = _apply(model, params, forward, rng, deterministic, batch)
    return logits, picked_labels, cross_entropy(logits, picked_labels)


def mlm_loss(model, params, batch, rng, deterministic=False, max_predictions=0):
    logits, labels, ce = mlm_outputs(model, params, batch, rng, deterministic, max_predictions)
    valid = labels >= 0
    accuracy = masked_mean(jnp.argmax(logits, -1) == labels, valid)
    loss = masked_mean(ce, valid)
    return loss, {'mlm_loss': loss, 'mlm_accuracy': accuracy}


# ----------------------------------------------------------------------------------------- MFM
def mfm_predictions(model, params, batch, rng, deterministic: bool):
    """feat_regress of the t-TRM output at every slot (B, L, vfeat), frames masked by mfm_mask."""
    def forward(module, b):
        h = module.encode_video(_video(b), b['mfm_mask'], None, deterministic)
        return module.regress_features(h)
    return _apply(model, params, forward, rng, deterministic, batch)


def mfm_nce_terms(preds, feats, mfm_mask, group_size: int = 0):
    """Per-slot NCE CE (B, L) and correctness (B, L); meaningful where mfm_mask.

    For masked slot j the candidates are [targets of all masked slots] ++ [predictions at all
    unmasked slots, padding included] of its group (spec §2.2), temperature 1. `group_size`
    videos form one group of negatives (the original's per-GPU batch; 0 = the whole batch).
    """
    b, length, dim = preds.shape
    groups = b // group_size if group_size and b > group_size else 1
    if b % groups:
        raise ValueError(f'{b} videos do not split into NCE groups of {group_size}')
    n = b * length // groups
    p = preds.reshape(groups, n, dim).astype(jnp.float32)
    t = feats.reshape(groups, n, dim).astype(jnp.float32)
    m = mfm_mask.reshape(groups, n)
    pos = jnp.einsum('gid,gjd->gij', p, t)
    neg = jnp.einsum('gid,gjd->gij', p, p)
    logits = jnp.concatenate([jnp.where(m[:, None, :], pos, -jnp.inf),
                              jnp.where(m[:, None, :], -jnp.inf, neg)], axis=-1)
    own = jnp.diagonal(pos, axis1=1, axis2=2)
    ce = jax.nn.logsumexp(logits, axis=-1) - own
    correct = jnp.argmax(logits, axis=-1) == jnp.arange(n)
    return ce.reshape(b, length), correct.reshape(b, length)


def mfm_nce_loss(model, params, batch, rng, deterministic=False, group_size=0):
    preds = mfm_predictions(model, params, batch, rng, deterministic)
    ce, correct = mfm_nce_terms(preds, batch['frame_feats'], batch['mfm_mask'], group_size)
    mask = batch['mfm_mask']
    loss = masked_mean(ce, mask)
    return loss, {'mfm_nce_loss': loss, 'mfm_nce_accuracy': masked_mean(correct, mask)}


def mffr_loss(model, params, batch, rng, deterministic=False):
    """Regression: per-frame L2 distance sqrt(sum squared error), averaged over masked frames."""
    preds = mfm_predictions(model, params, batch, rng, deterministic)
    sq = jnp.square(preds.astype(jnp.float32) - batch['frame_feats'].astype(jnp.float32))
    loss = masked_mean(jnp.sqrt(jnp.sum(sq, -1)), batch['mfm_mask'])
    return loss, {'mffr_loss': loss}


# ----------------------------------------------------------------------------------------- FOM
def fom_outputs(model, params, batch, rng, deterministic: bool):
    """FOM logits (B, L, 100) at every slot after shuffling the t-TRM input."""
    def forward(module, b):
        h = module.encode_video(_video(b), None, b['shuffled_orders'], deterministic)
        return module.fom_logits(h)
    return _apply(model, params, forward, rng, deterministic, batch)


def fom_loss(model, params, batch, rng, deterministic=False):
    logits = fom_outputs(model, params, batch, rng, deterministic)
    targets = batch['fom_targets']
    valid = targets >= 0
    loss = masked_mean(cross_entropy(logits, targets), valid)
    accuracy = masked_mean(jnp.argmax(logits, -1) == targets, valid)
    return loss, {'fom_loss': loss, 'fom_accuracy': accuracy}


# ----------------------------------------------------------------------------------------- VSM
def vsm_outputs(model, params, batch, rng, deterministic: bool):
    """Local forward: query vectors (B, Q, H), frames (B, L, H), own-video span logits (B, Q, L)."""
    def forward(module, b):
        video = module.encode_video(_video(b), None, None, deterministic)
        nb, nq, tq = b['query_ids'].shape
        query = module.encode_query(b['query_ids'].reshape(nb * nq, tq),
                                    b['query_mask'].reshape(nb * nq, tq), deterministic)
        query = query.reshape(nb, nq, -1)
        st, ed = module.own_span_logits(query, video, b['frame_mask'])
        return dict(query=query, video=video, st=st, ed=ed)
    return _apply(model, params, forward, rng, deterministic, batch)


def scale_grad(x, scale: float):
    """Value x, gradient scale * dx (the original's all-gather keeps 1/R of the gradient)."""
    if scale == 1.0:
        return x
    return x * scale + jax.lax.stop_gradient(x * (1.0 - scale))


def gather_across(x, axis_name: str | None, keep_local_grad: bool):
    """All-gather over the data-parallel shards (identity when axis_name is None).

    keep_local_grad=True reproduces the original `all_gather` backward (each shard keeps only
    its own slice of the incoming gradient); False is JAX's all_gather (reduce-scatter
    transpose, i.e. R times larger gradients after averaging, spec §2.3).
    """
    if axis_name is None:
        return x
    gathered = jax.lax.all_gather(x, axis_name, tiled=True)
    if not keep_local_grad:
        return gathered
    index = jax.lax.axis_index(axis_name)
    local = jax.lax.dynamic_slice_in_dim(gathered, index * x.shape[0], x.shape[0])
    return jax.lax.stop_gradient(gathered) + jax.lax.dynamic_update_slice_in_dim(
        jnp.zeros_like(gathered), x - jax.lax.stop_gradient(local), index * x.shape[0], 0)


def vsm_terms(outputs, batch, step, settings: VsmSettings, axis_name: str | None = None,
              keep_local_grad: bool = False):
    """Per-query terms: span CE and validity (B*Q, 2) of the local queries, hinge terms of
    *all* queries and the score matrix.

    With axis_name (inside shard_map / pmap) queries, frames and frame masks of every shard are
    gathered first, so each shard scores all queries against all videos; under jax.jit over a
    mesh the batch is already global and axis_name stays None. One implementation either way.
    """
    span = span_ce(outputs['st'], outputs['ed'], batch['query_targets'])
    query = gather_across(outputs['query'], axis_name, keep_local_grad)
    video = gather_across(outputs['video'], axis_name, keep_local_grad)
    frame_mask = gather_across(batch['frame_mask'], axis_name, keep_local_grad)
    nb, nq, hidden = query.shape
    scores = video_query_scores(query.reshape(nb * nq, hidden), video, frame_mask)
    q_vidx = jnp.repeat(jnp.arange(nb), nq)
    use_hard = step >= settings.hard_negative_start_step
    neg_ctx, neg_q = ranking_terms(scores, q_vidx, settings, use_hard)
    return span, neg_ctx, neg_q, scores


def vsm_loss(model, params, batch, rng, step, settings: VsmSettings, deterministic=False,
             axis_name=None, keep_local_grad=False):
    """Training reduction: lw_st_ed * mean CE (kept with prob 1 - drop_svmr_prob) + hinges."""
    fwd_rng, drop_rng = jax.random.split(rng)
    outputs = vsm_outputs(model, params, batch, fwd_rng, deterministic)
    (ce, valid), neg_ctx, neg_q, scores = vsm_terms(outputs, batch, step, settings, axis_name,
                                                    keep_local_grad)
    keep_local = jax.random.uniform(drop_rng) >= settings.drop_svmr_prob
    span = masked_mean(ce[:, 0], valid[:, 0]) + masked_mean(ce[:, 1], valid[:, 1])
    st_ed = settings.lw_st_ed * span * keep_local.astype(jnp.float32)
    ctx = scale_grad(settings.lw_neg_ctx * jnp.mean(neg_ctx), settings.hinge_grad_scale)
    qry = scale_grad(settings.lw_neg_q * jnp.mean(neg_q), settings.hinge_grad_scale)
    nq = scores.shape[0]
    own = jnp.repeat(jnp.arange(scores.shape[1]), nq // scores.shape[1])
    recall1 = jnp.mean(jnp.argmax(scores, axis=1) == own)
    loss = st_ed + ctx + qry
    return loss, {'vsm_loss': loss, 'vsm_st_ed': st_ed, 'vsm_neg_ctx': ctx, 'vsm_neg_q': qry,
                  'vsm_video_r1': recall1}


def vsm_eval_terms(model, params, batch, step, settings: VsmSettings):
    """Eval reduction of the original: lw * summed span CE, lw * per-query hinge vectors."""
    outputs = vsm_outputs(model, params, batch, None, True)
    (ce, _), neg_ctx, neg_q, _ = vsm_terms(outputs, batch, step, settings)
    return (settings.lw_st_ed * jnp.sum(ce), settings.lw_neg_ctx * neg_ctx,
            settings.lw_neg_q * neg_q)


def vsm_eval_predictions(model, params, batch):
    """Eval predictions: video scores (Nq, Nv) and start/end logits for every (query, video)."""
    outputs = vsm_outputs(model, params, batch, None, True)
    nb, nq, hidden = outputs['query'].shape
    query = outputs['query'].reshape(nb * nq, hidden)
    scores = video_query_scores(query, outputs['video'], batch['frame_mask'])
    st, ed = model.apply({'params': params}, query, outputs['video'], batch['frame_mask'],
                         method=HeroModel.span_logits)
    return scores, st, ed

