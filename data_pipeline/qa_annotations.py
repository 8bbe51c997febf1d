"""Parsers for the MERLOT Reserve downstream annotation formats (no model code):

  MSRVTT-QA json   [{id, video_id, question, answer, category_id?}, ...] (a JSON array; a
                   jsonl file with one object a line is accepted too)
  VCR jsonl        {annot_id, img_fn, metadata_fn, objects, question, answer_choices (4),
                   answer_label, rationale_choices (4), rationale_label}; question / choices are
                   token lists where an object reference is a list of object indices
  Kinetics csv     label, youtube_id, time_start, time_end[, split] (header row first)

Like data_pipeline/annotations.py (TVQA, TVR, VIOLIN), every parser reads the whole file and
reports all malformed entries with their 1-based line numbers (errors='raise' raises one
AnnotationError, errors='skip' returns (records, [(line, message)])).
"""
from __future__ import annotations

import csv
import dataclasses
import json

from data_pipeline.annotations import AnnotationError, _require, read_jsonl


def _finish(path, records, problems, errors):
    if errors not in ('raise', 'skip'):
        raise ValueError(f"errors must be 'raise' or 'skip', got {errors!r}")
    if problems and errors == 'raise':
        raise AnnotationError(str(path), problems)
    return (records, problems) if errors == 'skip' else records


# ------------------------------------------------------------------------------ MSRVTT-QA
@dataclasses.dataclass(frozen=True)
class VideoQuestion:
    qid: str
    video_id: str
    question: str
    answer: str


def parse_video_question(record: dict) -> VideoQuestion:
    question = _require(record, 'question', str).strip()
    if not question:
        raise ValueError('empty question')
    return VideoQuestion(qid=str(_require(record, 'id', (str, int))),
                         video_id=str(_require(record, 'video_id', (str, int))),
                         question=question, answer=_require(record, 'answer', str).strip())


def read_msrvtt_qa(path, errors: str = 'raise'):
    """MSRVTT-QA questions from a JSON array (each element's line is where it starts) or jsonl."""
    with open(path, encoding='utf-8') as f:
        text = f.read()
    if not text.lstrip().startswith('['):
        return read_jsonl(path, parse_video_question, errors)
    decoder = json.JSONDecoder()
    records, problems = [], []
    pos = text.index('[') + 1

    def skip(p):
        while p < len(text) and text[p] in ' \t\r\n':
            p += 1
        return p
    pos = skip(pos)
    while pos < len(text) and text[pos] != ']':
        line = text.count('\n', 0, pos) + 1
        try:
            element, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as error:
            problems.append((text.count('\n', 0, error.pos) + 1, f'invalid JSON: {error.msg}'))
            break
        try:
            if not isinstance(element, dict):
                raise ValueError(f'expected a JSON object, got {type(element).__name__}')
            records.append(parse_video_question(element))
        except (ValueError, TypeError) as error:
            problems.append((line, str(error)))
        pos = skip(end)
        if pos < len(text) and text[pos] == ',':
            pos = skip(pos + 1)
    return _finish(path, records, problems, errors)


# ------------------------------------------------------------------------------------ VCR
@dataclasses.dataclass(frozen=True)
class VcrQuestion:
    annot_id: str
    img_fn: str
    metadata_fn: str
    objects: tuple[str, ...]
    question: tuple
    answer_choices: tuple
    answer_label: int | None
    rationale_choices: tuple
    rationale_label: int | None


def _tokens(value, n_objects: int, field: str) -> tuple:
    if not isinstance(value, list):
        raise ValueError(f'{field} should be a token list')
    out = []
    for tok in value:
        if isinstance(tok, list):
            if not tok or not all(isinstance(i, int) and 0 <= i < n_objects for i in tok):
                raise ValueError(f'{field}: object reference {tok} outside 0..{n_objects - 1}')
            out.append(tuple(tok))
        elif isinstance(tok, str):
            out.append(tok)
        else:
            raise ValueError(f'{field}: token {tok!r} is neither a word nor object indices')
    return tuple(out)


def parse_vcr(record: dict) -> VcrQuestion:
    objects = tuple(_require(record, 'objects', list))
    n = len(objects)

    def choices(key):
        value = _require(record, key, list)
        if len(value) != 4:
            raise ValueError(f'{key} should have 4 entries, has {len(value)}')
        return tuple(_tokens(c, n, f'{key}[{k}]') for k, c in enumerate(value))

    def label(key):
        value = record.get(key)
        if value is None:
            return None
        if not isinstance(value, int) or not 0 <= value < 4:
            raise ValueError(f'{key} {value!r} outside 0..3')
        return value
    return VcrQuestion(annot_id=str(_require(record, 'annot_id', (str, int))),
                       img_fn=_require(record, 'img_fn', str),
                       metadata_fn=str(record.get('metadata_fn', '')), objects=objects,
                       question=_tokens(_require(record, 'question', list), n, 'question'),
                       answer_choices=choices('answer_choices'),
                       answer_label=label('answer_label'),
                       rationale_choices=choices('rationale_choices'),
                       rationale_label=label('rationale_label'))


def read_vcr(path, errors: str = 'raise'):
    return read_jsonl(path, parse_vcr, errors)


# ------------------------------------------------------------------------------- Kinetics
@dataclasses.dataclass(frozen=True)
class KineticsClip:
    label: str
    youtube_id: str
    time_start: int
    time_end: int

    @property
    def stem(self) -> str:
        """The usual file name of the clip (the official downloader's)."""
        return f'{self.youtube_id}_{self.time_start:06d}_{self.time_end:06d}'


def read_kinetics_csv(path, errors: str = 'raise'):
    records, problems = [], []
    with open(path, encoding='utf-8', newline='') as f:
        rows = list(csv.reader(f))
    if not rows:
        return _finish(path, records, [(1, 'empty file (expected a header row)')], errors)
    header = [h.strip() for h in rows[0]]
    missing = {'label', 'youtube_id', 'time_start', 'time_end'} - set(header)
    if missing:
        return _finish(path, records, [(1, f'header lacks {sorted(missing)}')], errors)
    col = {name: header.index(name) for name in header}
    for number, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        try:
            if len(row) < len(header):
                raise ValueError(f'{len(row)} fields, header has {len(header)}')
            start, end = int(float(row[col['time_start']])), int(float(row[col['time_end']]))
            if start < 0 or end <= start:
                raise ValueError(f'time_start {start} / time_end {end} is not a window')
            label, vid = row[col['label']].strip(), row[col['youtube_id']].strip()
            if not label or not vid:
                raise ValueError('empty label or youtube_id')
            records.append(KineticsClip(label, vid, start, end))
        except ValueError as error:
            problems.append((number, str(error)))
    return _finish(path, records, problems, errors)
