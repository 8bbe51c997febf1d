"""VCR (Zellers et al. 2019) as a TFDS dataset read from the user's local copy (`manual_dir`),
prepared as MERLOT Reserve's VCR finetuning data (spec §7.2). No model code here.

manual_dir holds the released `{train,val,test}.jsonl` (parsed by data_pipeline/qa_annotations.py,
malformed lines reported with their line numbers) and `vcr1images/` with each question's
`img_fn` (JPEG) and `metadata_fn` (JSON with `boxes` [[x1, y1, x2, y2, score]] per object).

Per question: the detection boxes are drawn on the image (translucent fill plus a 2 px outline,
colour hashed from the object name), which is resized so the shorter side is 450 and the longer
<= 800; a left-right flipped render is stored too unless the text mentions left or right.
Object references become names: "the car" when the image has one car, else "person 1",
"person 2", ... (numbered among the objects of that name), lists joined with "and". The QA->R
query is question + " answer: " + the right answer (test questions without labels use answer
0). Labels are -1 when absent.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from data_pipeline import media
from data_pipeline.qa_annotations import VcrQuestion, read_vcr

log = logging.getLogger(__name__)
SPLITS = (('train', 'train.jsonl'), ('validation', 'val.jsonl'), ('test', 'test.jsonl'))
SHORT_SIDE, LONG_SIDE = 450, 800
FILL_ALPHA = 0.2
_SIDE_WORDS = re.compile(r'\b(left|right)\b', re.IGNORECASE)


def object_names(objects) -> list[str]:
    """Display name of every object: 'the car' if unique, else 'person 2' (1-based rank)."""
    counts: dict[str, int] = {}
    for name in objects:
        counts[name] = counts.get(name, 0) + 1
    seen: dict[str, int] = {}
    out = []
    for name in objects:
        seen[name] = seen.get(name, 0) + 1
        out.append(f'the {name}' if counts[name] == 1 else f'{name} {seen[name]}')
    return out


def to_text(tokens, names: list[str]) -> str:
    words = []
    for tok in tokens:
        if isinstance(tok, tuple | list):
            refs = [names[i] for i in tok]
            words.append(' and '.join(refs))
        else:
            words.append(tok)
    text = ' '.join(words)
    return re.sub(r" ([.,!?;:'])", r'\1', re.sub(r" (n't|'s|'re|'m|'ll|'ve|'d)\b", r'\1', text))


def colour_of(name: str) -> np.ndarray:
    digest = hashlib.md5(name.encode()).digest()
    return np.array([64 + digest[i] % 192 for i in range(3)], np.float32)


def draw_boxes(image: np.ndarray, boxes, names) -> np.ndarray:
    """uint8 [H, W, 3] with translucent filled, outlined boxes."""
    out = image.astype(np.float32)
    h, w = image.shape[:2]
    for box, name in zip(boxes, names):
        x1, y1, x2, y2 = (int(round(v)) for v in box[:4])
        x1, x2 = max(0, min(x1, w - 1)), max(0, min(x2, w - 1))
        y1, y2 = max(0, min(y1, h - 1)), max(0, min(y2, h - 1))
        if x2 <= x1 or y2 <= y1:
            continue
        colour = colour_of(name)
        region = out[y1:y2 + 1, x1:x2 + 1]
        region[:] = (1 - FILL_ALPHA) * region + FILL_ALPHA * colour
        for edge in (out[y1:y1 + 2, x1:x2 + 1], out[y2 - 1:y2 + 1, x1:x2 + 1],
                     out[y1:y2 + 1, x1:x1 + 2], out[y1:y2 + 1, x2 - 1:x2 + 1]):
            edge[:] = colour
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def prepare_question(q: VcrQuestion, image_dir: str) -> dict:
    names = object_names(q.objects)
    question = to_text(q.question, names)
    answers = [to_text(a, names) for a in q.answer_choices]
    rationales = [to_text(r, names) for r in q.rationale_choices]
    with open(os.path.join(image_dir, q.img_fn), 'rb') as f:
        image = media.decode_jpeg(f.read(), channels=3)
    boxes = []
    if q.metadata_fn:
        with open(os.path.join(image_dir, q.metadata_fn)) as f:
            boxes = json.load(f).get('boxes', [])
    drawn = media.resize_for_storage(draw_boxes(image, boxes, q.objects), SHORT_SIDE, LONG_SIDE)
    flip = not _SIDE_WORDS.search(' '.join([question, *answers, *rationales]))
    right = 0 if q.answer_label is None else q.answer_label
    return {'id': q.annot_id, 'image': media.encode_jpeg(drawn),
            'image_fliplr': media.encode_jpeg(drawn[:, ::-1] if flip else drawn),
            'has_fliplr': flip, 'qa_query': question, 'qa_choices': answers,
            'qa_label': -1 if q.answer_label is None else q.answer_label,
            'qar_query': f'{question} answer: {answers[right]}', 'qar_choices': rationales,
            'qar_label': -1 if q.rationale_label is None else q.rationale_label}


class VcrAnnotations(tfds.core.GeneratorBasedBuilder):
    VERSION = tfds.core.Version('1.0.0')
    code_path = epath.Path(__file__)
    RELEASE_NOTES = {'1.0.0': 'Released VCR jsonl + vcr1images, boxes drawn.'}
    MANUAL_DOWNLOAD_INSTRUCTIONS = """
    Download VCR (https://visualcommonsense.com/download/): put train.jsonl, val.jsonl,
    test.jsonl and the unpacked vcr1images/ folder in `manual_dir`.
    """

    def _info(self) -> tfds.core.DatasetInfo:
        text = tfds.features.Text()
        return tfds.core.DatasetInfo(
            builder=self,
            description='VCR questions with boxes drawn on the image (MERLOT Reserve format).',
            features=tfds.features.FeaturesDict({
                'id': text,
                'image': tfds.features.Image(encoding_format='jpeg'),
                'image_fliplr': tfds.features.Image(encoding_format='jpeg'),
                'has_fliplr': tfds.features.Scalar(dtype=np.bool_),
                'qa_query': text, 'qa_choices': tfds.features.Sequence(text, length=4),
                'qa_label': tfds.features.Scalar(dtype=np.int32),
                'qar_query': text, 'qar_choices': tfds.features.Sequence(text, length=4),
                'qar_label': tfds.features.Scalar(dtype=np.int32)}),
            homepage='https://visualcommonsense.com/')

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        found = {split: os.path.join(dl_manager.manual_dir, name) for split, name in SPLITS
                 if os.path.exists(os.path.join(dl_manager.manual_dir, name))}
        if not found:
            raise FileNotFoundError(f'no train/val/test.jsonl in {dl_manager.manual_dir}')
        image_dir = os.path.join(dl_manager.manual_dir, 'vcr1images')
        return {split: self._generate_examples(path, image_dir) for split, path in found.items()}

    def _generate_examples(self, path, image_dir):
        missing = []
        for q in read_vcr(path):
            try:
                example = prepare_question(q, image_dir)
            except FileNotFoundError as error:
                missing.append(str(error))
                continue
            yield q.annot_id, example
        if missing:
            log.warning('%s: %d questions skipped (missing files), e.g. %s', path, len(missing),
                        missing[:3])
