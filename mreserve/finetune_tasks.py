"""MERLOT Reserve finetuning as engine Tasks (spec §7): TVQA, VCR, video classification.

`config.task` names `build_tvqa_task`, `build_vcr_task` or `build_classification_task`
(`kind_of(config)` recovers the kind). The examples of a step are a function of (seed, step)
only (a fresh permutation per epoch), so a resumed run sees the batches it would have seen.

Losses and predictions:
  TVQA   10 option sequences per question (5 with audio, 5 with subtitles) -> logits [B, 2, 5];
         loss = CE(audio logits) + CE(text logits); prediction = argmax of
         softmax(audio) + softmax(text)
  VCR    8 option sequences (Q->A, QA->R) -> logits [B, 2, 4]; loss = the sum of both CEs;
         Q->AR is right when both are
  class. one sequence -> [B, num_classes]; top-1 / top-5 accuracy
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from mreserve import finetune_data as fd
from mreserve import finetune_sources
from mreserve.finetune_model import MerlotReserveDownstream, batch_inputs
from mreserve.model_config import ModelConfig
from trainer.mesh import rules_from_config
from trainer.task import BatchSpec, Task

KINDS = ('tvqa', 'vcr', 'classification')
TARGET_KEYS = ('label', 'labels')


# ------------------------------------------------------------------------------- metrics
def tvqa_prediction(logits: np.ndarray) -> np.ndarray:
    """logits [N, 2, 5] (audio, text) -> argmax of the summed softmaxes [N]."""
    logits = np.asarray(logits, np.float64)
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    return probs.sum(1).argmax(-1)


def tvqa_metrics(logits: np.ndarray, labels: np.ndarray) -> dict:
    labels = np.asarray(labels)
    logits = np.asarray(logits)
    return {'accuracy': 100.0 * float(np.mean(tvqa_prediction(logits) == labels)),
            'accuracy_audio': 100.0 * float(np.mean(logits[:, 0].argmax(-1) == labels)),
            'accuracy_text': 100.0 * float(np.mean(logits[:, 1].argmax(-1) == labels)),
            'num_examples': int(len(labels))}


def vcr_metrics(logits: np.ndarray, labels: np.ndarray) -> dict:
    """logits [N, 2, 4], labels [N, 2] -> Q->A, QA->R and Q->AR accuracy (percent)."""
    right = np.asarray(logits).argmax(-1) == np.asarray(labels)
    return {'qa_accuracy': 100.0 * float(right[:, 0].mean()),
            'qar_accuracy': 100.0 * float(right[:, 1].mean()),
            'q_ar_accuracy': 100.0 * float(right.all(1).mean()),
            'num_examples': int(len(right))}


def topk_accuracy(logits: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Percent of rows whose label is among the k largest logits (ties broken by index)."""
    logits = np.asarray(logits)
    top = np.argsort(-logits, axis=-1, kind='stable')[:, :k]
    return 100.0 * float(np.mean((top == np.asarray(labels)[:, None]).any(-1)))


def classification_metrics(logits: np.ndarray, labels: np.ndarray) -> dict:
    return {'top1': topk_accuracy(logits, labels, 1),
            'top5': topk_accuracy(logits, labels, min(5, np.asarray(logits).shape[-1])),
            'num_examples': int(len(labels))}


METRICS = {'tvqa': tvqa_metrics, 'vcr': vcr_metrics, 'classification': classification_metrics}


# ------------------------------------------------------------------------------- the kinds
@dataclasses.dataclass(frozen=True)
class Downstream:
    kind: str
    model: MerlotReserveDownstream
    forward: Callable          # (params, batch) -> logits ([B,2,5] / [B,2,4] / [B,C])
    loss: Callable             # (logits, batch) -> (loss, metrics)
    make_batch: Callable       # (examples, rng or None) -> numpy batch
    init: Callable             # (rng, batch) -> boxed params


def _ce(logits, labels):
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def _accuracy(logits, labels):
    return jnp.mean((jnp.argmax(logits, -1) == labels).astype(jnp.float32))


def text_prefixes(config) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Ids of "answer: " and "rationale: " (none without a tokenizer: synthetic data)."""
    path = config.data.get('tokenizer', '')
    if not path:
        return (), ()
    from data_pipeline.tokenizer import load_tokenizer
    tok = load_tokenizer(path)
    return tuple(tok.encode('answer: ')), tuple(tok.encode('rationale: '))


def layout_of(config) -> fd.Layout:
    answer, rationale = text_prefixes(config)
    data = config.data
    return fd.Layout(int(data.lang_seq_len), int(data.max_option_len), int(data.num_segments),
                     answer, rationale)


def make_downstream(config, kind: str) -> Downstream:
    if kind not in KINDS:
        raise ValueError(f'unknown downstream kind {kind!r}; known: {KINDS}')
    model_config = ModelConfig.from_config(config)
    layout = layout_of(config)
    if kind == 'classification':
        classes = int(config.data.num_classes)
        use_audio = bool(config.data.use_audio)
        model = MerlotReserveDownstream(model_config, num_classes=classes)

        def forward(params, batch):
            return model.apply({'params': params}, *batch_inputs(batch), method='class_logits')

        def loss(logits, batch):
            labels = batch['label']
            top5 = jnp.argsort(-logits, -1)[:, :min(5, classes)]
            return _ce(logits, labels), {
                'top1': _accuracy(logits, labels),
                'top5': jnp.mean(jnp.any(top5 == labels[:, None], -1).astype(jnp.float32))}

        def make_batch(examples, rng):
            del rng
            return fd.classification_batch(examples, layout, use_audio)
        method, kwargs = 'class_logits', {}
    else:
        model = MerlotReserveDownstream(model_config)
        options = 5 if kind == 'tvqa' else 4
        offset = 1 if kind == 'tvqa' else 0

        def forward(params, batch):
            logits = model.apply({'params': params}, *batch_inputs(batch),
                                 method='option_logits', frame_offset=offset)
            return logits.reshape(logits.shape[0], 2, options)

        if kind == 'tvqa':
            def loss(logits, batch):
                labels = batch['label']
                audio, text = _ce(logits[:, 0], labels), _ce(logits[:, 1], labels)
                pred = jnp.argmax(jax.nn.softmax(logits, -1).sum(1), -1)
                return audio + text, {
                    'loss_audio': audio, 'loss_text': text,
                    'accuracy': jnp.mean((pred == labels).astype(jnp.float32))}

            def make_batch(examples, rng):
                return fd.tvqa_batch(examples, layout, rng)
        else:
            def loss(logits, batch):
                labels = batch['labels']
                qa, qar = _ce(logits[:, 0], labels[:, 0]), _ce(logits[:, 1], labels[:, 1])
                return qa + qar, {'loss_qa': qa, 'loss_qar': qar,
                                  'qa_accuracy': _accuracy(logits[:, 0], labels[:, 0]),
                                  'qar_accuracy': _accuracy(logits[:, 1], labels[:, 1])}

            def make_batch(examples, rng):
                del rng
                return fd.vcr_batch(examples, layout)
        method, kwargs = 'option_logits', {'frame_offset': offset}

    def init(rng, batch):
        return model.init(rng, *batch_inputs(batch), method=method, **kwargs)['params']
    return Downstream(kind, model, forward, loss, make_batch, init)


def example_index(seed: int, step: int, row: int, global_batch: int, n: int) -> int:
    """Example for global row `row` of step `step`: walk a fresh permutation every epoch."""
    position = step * global_batch + row
    epoch, offset = divmod(position, n)
    return int(np.random.default_rng([seed, epoch]).permutation(n)[offset])


def _model_inputs(batch):
    return {k: v for k, v in batch.items() if k not in TARGET_KEYS}


def build_task(config, kind: str) -> Task:
    ds = make_downstream(config, kind)
    rules = rules_from_config(config.mesh.rules)
    global_batch = int(config.train.global_batch)
    seed = int(config.seed)
    train = finetune_sources.load_split(config, kind, 'train')
    if not len(train):
        raise ValueError('the training split has no examples')
    classes = train.meta.get('num_classes')
    if kind == 'classification' and classes and classes != int(config.data.num_classes):
        raise ValueError(f'data.num_classes is {config.data.num_classes}, the data has '
                         f'{classes} classes')

    def iterate(start_step, process_index, process_count):
        local = global_batch // process_count
        rows = range(process_index * local, (process_index + 1) * local)
        step = start_step
        while True:
            picked = [train.example(example_index(seed, step, r, global_batch, len(train)),
                                    seed=seed * 1_000_003 + step * global_batch + r)
                      for r in rows]
            yield ds.make_batch(picked, np.random.default_rng([seed, step, process_index]))
            step += 1

    def eval_batches(start_step, process_index, process_count):
        del start_step
        val = finetune_sources.load_split(config, kind, 'val')
        local = global_batch // process_count
        for first in range(0, len(val), global_batch):
            rows = range(first + process_index * local, first + (process_index + 1) * local)
            yield ds.make_batch([val.example(r % len(val)) for r in rows], None)

    def loss(params, batch, rng, step):
        del rng, step
        with nn.logical_axis_rules(rules):
            logits = ds.forward(params, _model_inputs(batch))
        return ds.loss(logits, batch)

    def eval_metrics(params, batch, rng):
        value, metrics = loss(params, batch, rng, 0)
        return dict(metrics, loss=value)

    example = ds.make_batch([train.example(0)], None)
    spec = {k: BatchSpec((global_batch,) + v.shape[1:], v.dtype) for k, v in example.items()}
    return Task(name=f'mreserve_{kind}', init=lambda rng, batch: ds.init(
                    rng, _model_inputs(batch)),
                loss=loss, batch_spec=spec, train_batches=iterate, eval_batches=eval_batches,
                eval_metrics=eval_metrics)


def build_tvqa_task(config) -> Task:
    return build_task(config, 'tvqa')


def build_vcr_task(config) -> Task:
    return build_task(config, 'vcr')


def build_classification_task(config) -> Task:
    return build_task(config, 'classification')


def kind_of(config) -> str:
    name = config.task.rpartition(':')[2]
    for kind in KINDS:
        if name == f'build_{kind}_task':
            return kind
    raise ValueError(f'config.task {config.task!r} is not a MERLOT Reserve downstream task')
