"""Where MERLOT Reserve downstream examples come from: `load_split(config, kind, split)`.

Returns a `Source`: `len(source)` and `source.example(i, seed=None)` (a decoded example dict of
mreserve/finetune_data.py; `seed` turns on the training augmentation of the frames). Examples
are read on demand, so a split never has to fit in memory.

  data.source = 'synthetic'  learnable corpora (tests, smoke runs): an example's class is
                             carried by its frames' colour, its audio's mel band and its
                             subtitle words; the right option names the class
  data.source = 'records'    TVQA TFRecords of data_pipeline/tvqa_records.py,
                             data.{train,val,test}_records (glob patterns)
  data.source = 'tfds'       VCR / Kinetics TFDS builders (data_pipeline/tfds_builders/) in
                             data.tfds_dir (prepared from the user's `manual_dir`)
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from mreserve.model_config import ModelConfig

PATCH_DIM = 768


class Source:
    def __init__(self, n: int, get: Callable[[int, int | None], dict], meta: dict | None = None):
        self._n, self._get, self.meta = n, get, meta or {}

    def __len__(self) -> int:
        return self._n

    def example(self, i: int, seed: int | None = None) -> dict:
        return self._get(i, seed)


def patches_from_jpeg(data: bytes, grid, seed: int | None = None) -> np.ndarray:
    """JPEG -> [h*w, 768] patches with the pretraining reader's decoding (eval: bilinear
    resize into the grid box; with `seed`: its random scale, resize method and crop)."""
    from data_pipeline.mreserve_reader import decode_image
    return decode_image(data, tuple(grid), None if seed is None else [seed, 0],
                        train=seed is not None).numpy()


# ----------------------------------------------------------------------------- synthetic
@dataclasses.dataclass(frozen=True)
class Synthetic:
    """Learnable synthetic corpus. Class c: frames of colour `colours[c]` (+ noise), audio with
    a loud mel band c, subtitle / answer word `words[c]`; a VCR rationale for class k repeats
    the answer word of k (the QA->R query ends with the right answer). Words and colours
    depend on the seed only, examples on (seed, split, index)."""
    seed: int
    classes: int
    grid: tuple[int, int]
    segments: int

    @property
    def _shared(self):
        rng = np.random.default_rng(self.seed)
        colours = rng.uniform(0.1, 0.9, size=(self.classes, 3)).astype(np.float32)
        words = 1000 + rng.permutation(8000)[:3 * self.classes + 16]
        return colours, words

    def frames(self, rng, c: int, n: int, real: int | None = None) -> np.ndarray:
        colours, _ = self._shared
        hw = self.grid[0] * self.grid[1]
        pix = np.tile(colours[c], PATCH_DIM // 3)[None, None]
        out = np.clip(pix + 0.05 * rng.normal(size=(n, hw, PATCH_DIM)), 0, 1).astype(np.float32)
        if real is not None:
            out[real:] = 0.0
        return out

    def audio(self, rng, c: int, n_sub: int) -> np.ndarray:
        out = rng.uniform(0.0, 1.0, size=(n_sub, 60, 65)).astype(np.float32)
        band = 64 // self.classes
        out[:, :, c * band:(c + 1) * band] += 3.0
        out[..., -1] = 1.0
        return out

    def words(self):
        _, words = self._shared
        k = self.classes
        return words[:k], words[k:2 * k], words[2 * k:3 * k], words[3 * k:]

    def rng(self, split: str, i: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, sum(split.encode()), i])

    def tvqa(self, split: str, i: int) -> dict:
        rng = self.rng(split, i)
        cls_words, _, _, filler = self.words()
        c = int(rng.integers(self.classes))
        real = int(rng.integers(3, self.segments + 1))
        order = rng.permutation(self.classes)[:5]
        if c not in order:
            order[rng.integers(len(order))] = c
        subs = [[int(w) for w in rng.choice(filler, 2)] + ([int(cls_words[c])] if s < real else [])
                for s in range(self.segments)]
        return dict(patches=self.frames(rng, c, self.segments, real),
                    audio=self.audio(rng, c, 3 * self.segments),
                    query=[int(w) for w in rng.choice(filler, 3)],
                    choices=[[int(cls_words[k]), int(rng.choice(filler))] for k in order],
                    subs=subs, label=int(np.flatnonzero(order == c)[0]))

    def vcr(self, split: str, i: int) -> dict:
        rng = self.rng(split, i)
        cls_words, why_words, _, filler = self.words()
        c = int(rng.integers(self.classes))

        def four():
            order = rng.permutation(self.classes)[:4]
            if c not in order:
                order[rng.integers(4)] = c
            return order, int(np.flatnonzero(order == c)[0])
        qa, qa_label = four()
        qar, qar_label = four()
        question = [int(w) for w in rng.choice(filler, 3)]
        return dict(patches=self.frames(rng, c, 1), qa_query=question,
                    qa_choices=[[int(cls_words[k])] for k in qa],
                    qar_query=question + [int(cls_words[c])],
                    qar_choices=[[int(why_words[k]), int(cls_words[k])] for k in qar],
                    qa_label=qa_label, qar_label=qar_label)

    def classification(self, split: str, i: int) -> dict:
        rng = self.rng(split, i)
        c = int(rng.integers(self.classes))
        return dict(patches=self.frames(rng, c, self.segments),
                    audio=self.audio(rng, c, 3 * self.segments), label=c)


def synthetic_split(config, kind: str, split: str) -> Source:
    data = config.data
    model = ModelConfig.from_config(config)
    corpus = Synthetic(int(data.synthetic_seed), int(data.synthetic_classes),
                       model.output_grid, int(data.num_segments))
    make = {'tvqa': corpus.tvqa, 'vcr': corpus.vcr,
            'classification': corpus.classification}[kind]
    n = int(data.synthetic_examples)
    return Source(n, lambda i, seed: make(split, i),
                  {'num_classes': corpus.classes, 'class_names': [str(k) for k in
                                                                  range(corpus.classes)]})


# --------------------------------------------------------------------------- TVQA records
def tvqa_records_split(config, split: str) -> Source:
    from data_pipeline import tvqa_records
    from data_pipeline.record_index import RecordIndex
    pattern = config.data.get(f'{split}_records', '')
    if not pattern:
        raise ValueError(f'data.{split}_records is not set')
    index = RecordIndex.from_pattern(pattern)
    grid = ModelConfig.from_config(config).output_grid

    def get(i, seed):
        rec = tvqa_records.parse_record(index.read(i))
        patches = np.stack([patches_from_jpeg(img, grid, None if seed is None else seed + k)
                            for k, img in enumerate(rec['images'])])
        patches[rec['num_frames']:] = 0.0
        audio = tvqa_records.decode_specs(rec).reshape(-1, 60, 65)
        audio[..., -1] = 1.0
        return dict(patches=patches, audio=audio, query=rec['query'], choices=rec['choices'],
                    subs=rec['subs'], label=max(rec['label'], 0), id=rec['id'])
    return Source(len(index), get)


# ------------------------------------------------------------------------------ dispatch
def load_split(config, kind: str, split: str) -> Source:
    source = config.data.source
    if source == 'synthetic':
        return synthetic_split(config, kind, split)
    if source == 'records' and kind == 'tvqa':
        return tvqa_records_split(config, split)
    if source == 'tfds' and kind in ('vcr', 'classification'):
        from mreserve import finetune_tfds
        return finetune_tfds.load_split(config, kind, split)
    raise ValueError(f'data.source {source!r} does not serve {kind} '
                     '(synthetic; records for TVQA; tfds for VCR and classification)')
