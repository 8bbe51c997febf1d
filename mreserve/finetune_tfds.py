"""VCR and Kinetics-style examples from the TFDS builders of data_pipeline/tfds_builders/
(prepared from the user's `manual_dir` into `data.tfds_dir`).

Records are read on demand through an index of the split's files (random access, so the
engine's (seed, step) example order costs no memory) and parsed as the tf.train.Example protos
TFDS writes; images are decoded with the pretraining reader's patch decoding.
"""
from __future__ import annotations

import os

import numpy as np

from data_pipeline.record_index import RecordIndex
from mreserve.finetune_sources import Source, patches_from_jpeg
from mreserve.model_config import ModelConfig

SPLITS = {'train': 'train', 'val': 'validation', 'validation': 'validation', 'test': 'test'}


def split_index(builder, split: str) -> RecordIndex:
    name = SPLITS.get(split, split)
    if name not in builder.info.splits:
        raise ValueError(f'{builder.name} in {builder.data_dir} has no {name!r} split '
                         f'(has {sorted(builder.info.splits)})')
    return RecordIndex([os.path.join(builder.data_dir, f)
                        for f in builder.info.splits[name].filenames])


def _features(data: bytes):
    import tensorflow as tf
    return tf.train.Example.FromString(data).features.feature


def _text(f, key) -> list[str]:
    return [v.decode() for v in f[key].bytes_list.value]


def classification_split(config, split: str) -> Source:
    from data_pipeline.tfds_builders.kinetics import KineticsVideos
    segments = int(config.data.num_segments)
    builder = KineticsVideos(data_dir=config.data.tfds_dir, config=f'segments_{segments}')
    index = split_index(builder, split)
    grid = ModelConfig.from_config(config).output_grid
    names = builder.info.features['label'].names

    def get(i, seed):
        f = _features(index.read(i))
        frames = f['frames'].bytes_list.value
        patches = np.stack([patches_from_jpeg(img, grid, None if seed is None else seed + k)
                            for k, img in enumerate(frames)])
        audio = np.asarray(f['spectrograms'].float_list.value, np.float32).reshape(-1, 60, 65)
        return dict(patches=patches, audio=audio, label=int(f['label'].int64_list.value[0]),
                    id=_text(f, 'id')[0])
    return Source(len(index), get, {'num_classes': len(names), 'class_names': names})


def vcr_split(config, split: str) -> Source:
    from data_pipeline.tfds_builders.vcr import VcrAnnotations
    from data_pipeline.tokenizer import load_tokenizer
    builder = VcrAnnotations(data_dir=config.data.tfds_dir)
    index = split_index(builder, split)
    grid = ModelConfig.from_config(config).output_grid
    encode = load_tokenizer(config.data.tokenizer).encode
    flip_prob = float(config.data.get('flip_prob', 0.5))

    def get(i, seed):
        f = _features(index.read(i))
        image = f['image'].bytes_list.value[0]
        if seed is not None and int(f['has_fliplr'].int64_list.value[0]):
            if np.random.default_rng([seed, 7]).uniform() < flip_prob:
                image = f['image_fliplr'].bytes_list.value[0]
        return dict(patches=patches_from_jpeg(image, grid, seed)[None],
                    qa_query=encode(_text(f, 'qa_query')[0]),
                    qa_choices=[encode(t) for t in _text(f, 'qa_choices')],
                    qar_query=encode(_text(f, 'qar_query')[0]),
                    qar_choices=[encode(t) for t in _text(f, 'qar_choices')],
                    qa_label=max(int(f['qa_label'].int64_list.value[0]), 0),
                    qar_label=max(int(f['qar_label'].int64_list.value[0]), 0),
                    id=_text(f, 'id')[0])
    return Source(len(index), get)


def load_split(config, kind: str, split: str) -> Source:
    if not config.data.get('tfds_dir'):
        raise ValueError('data.tfds_dir is not set (the TFDS data_dir of the prepared builder)')
    return (vcr_split if kind == 'vcr' else classification_split)(config, split)
