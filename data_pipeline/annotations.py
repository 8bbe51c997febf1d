"""Parsers for the released downstream annotation files (no model code: HERO and MERLOT Reserve
both read them).

  TVR / How2R jsonl   {desc_id, desc, vid_name, duration, ts: [st, ed], type}  (test: no ts)
  TVQA / How2QA jsonl {qid, q, a0..a4, answer_idx, ts: "st-ed", vid_name}      (test: no answer)
  VIOLIN jsonl        {desc_id, desc, vid_name}; the last '-' field of desc_id is the label
                      (1 = entailed, 0 = contradicted) and the paired statement's id flips it
                      (HERO spec §3.3)

Every parser reads the whole file and reports *all* malformed lines with their 1-based line
numbers: `errors='raise'` (default) raises one AnnotationError listing them, `errors='skip'`
returns the good records and the problems as `(line, message)` pairs. Blank lines are ignored.
Times are seconds.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Callable, Iterable

MAX_LISTED = 20


class AnnotationError(ValueError):
    """Malformed annotation lines: `problems` holds (line number, message) pairs."""

    def __init__(self, path: str, problems: list[tuple[int, str]]):
        self.path, self.problems = path, problems
        listed = '\n'.join(f'  {path}:{line}: {msg}' for line, msg in problems[:MAX_LISTED])
        more = len(problems) - MAX_LISTED
        tail = f'\n  ... and {more} more' if more > 0 else ''
        super().__init__(f'{len(problems)} malformed line(s) in {path}:\n{listed}{tail}')


@dataclasses.dataclass(frozen=True)
class MomentQuery:
    desc_id: str
    desc: str
    vid_name: str
    duration: float | None
    ts: tuple[float, float] | None
    type: str


@dataclasses.dataclass(frozen=True)
class QAExample:
    qid: str
    q: str
    answers: tuple[str, ...]
    answer_idx: int | None
    ts: tuple[float, float] | None
    vid_name: str


@dataclasses.dataclass(frozen=True)
class Statement:
    desc_id: str
    desc: str
    vid_name: str
    label: int
    pair_id: str


def _require(record: dict, key: str, kind: type | tuple[type, ...]):
    if key not in record:
        raise ValueError(f'missing field {key!r}')
    value = record[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ValueError(f'field {key!r} should be {getattr(kind, "__name__", kind)}, '
                         f'got {type(value).__name__}')
    return value


def _window(st, ed) -> tuple[float, float]:
    st, ed = float(st), float(ed)
    if math.isnan(st) or math.isnan(ed):
        raise ValueError('ts is NaN')
    if st < 0 or ed < st:
        raise ValueError(f'ts [{st}, {ed}] is not a window (need 0 <= st <= ed)')
    return st, ed


def parse_moment_query(record: dict) -> MomentQuery:
    ts = record.get('ts')
    if ts is not None:
        if not isinstance(ts, list | tuple) or len(ts) != 2:
            raise ValueError(f'field ts should be [st, ed], got {ts!r}')
        ts = _window(*ts)
    duration = record.get('duration')
    return MomentQuery(desc_id=str(_require(record, 'desc_id', (str, int))),
                       desc=_require(record, 'desc', str),
                       vid_name=_require(record, 'vid_name', str),
                       duration=None if duration is None else float(duration),
                       ts=ts, type=str(record.get('type', '')))


def parse_tvqa_ts(ts) -> tuple[float, float] | None:
    """TVQA "st-ed" string -> (st, ed); "NaN-NaN" / missing -> None."""
    if ts is None:
        return None
    if not isinstance(ts, str) or ts.count('-') != 1:
        raise ValueError(f'field ts should be "st-ed", got {ts!r}')
    st, ed = ts.split('-')
    if st.strip().lower() == 'nan' or ed.strip().lower() == 'nan':
        return None
    return _window(st, ed)


def parse_qa(record: dict, num_answers: int = 5) -> QAExample:
    answers = tuple(_require(record, f'a{k}', str) for k in range(num_answers))
    answer = record.get('answer_idx')
    if answer is not None:
        answer = int(answer)
        if not 0 <= answer < num_answers:
            raise ValueError(f'answer_idx {answer} outside 0..{num_answers - 1}')
    return QAExample(qid=str(_require(record, 'qid', (str, int))), q=_require(record, 'q', str),
                     answers=answers, answer_idx=answer, ts=parse_tvqa_ts(record.get('ts')),
                     vid_name=_require(record, 'vid_name', str))


def parse_statement(record: dict) -> Statement:
    desc_id = str(_require(record, 'desc_id', (str, int)))
    prefix, sep, last = desc_id.rpartition('-')
    if not sep or last not in ('0', '1'):
        raise ValueError(f'desc_id {desc_id!r} does not end in -0 or -1 (the label)')
    label = int(last)
    return Statement(desc_id, _require(record, 'desc', str), _require(record, 'vid_name', str),
                     label, f'{prefix}-{1 - label}')


def read_jsonl(path: str | os.PathLike, parse: Callable[[dict], object],
               errors: str = 'raise'):
    """Parse every line of a jsonl file; see the module docstring for `errors`."""
    if errors not in ('raise', 'skip'):
        raise ValueError(f"errors must be 'raise' or 'skip', got {errors!r}")
    records, problems = [], []
    with open(path, encoding='utf-8') as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                if not isinstance(record, dict):
                    raise ValueError(f'expected a JSON object, got {type(record).__name__}')
                records.append(parse(record))
            except (ValueError, TypeError) as error:
                problems.append((number, str(error)))
    if problems and errors == 'raise':
        raise AnnotationError(str(path), problems)
    return (records, problems) if errors == 'skip' else records


def read_tvr(path, errors: str = 'raise'):
    return read_jsonl(path, parse_moment_query, errors)


def read_tvqa(path, errors: str = 'raise'):
    return read_jsonl(path, parse_qa, errors)


def read_violin(path, errors: str = 'raise'):
    return read_jsonl(path, parse_statement, errors)


def pair_statements(statements: Iterable[Statement]) -> list[tuple[Statement, Statement]]:
    """VIOLIN training pairs (statement, its opposite-label partner); statements whose partner
    is absent are left out."""
    by_id = {s.desc_id: s for s in statements}
    pairs = []
    for s in by_id.values():
        partner = by_id.get(s.pair_id)
        if partner is not None and s.label == 1:
            pairs.append((s, partner))
    return pairs


def read_subtitles(path, errors: str = 'raise'):
    """Subtitle jsonl of the original preprocessing: {vid_name, sub: [{text, start, end}]}
    -> {vid_name: [(text, start, end)]} (sorted by start)."""
    def parse(record):
        subs = _require(record, 'sub', list)
        out = []
        for k, s in enumerate(subs):
            if not isinstance(s, dict) or not {'text', 'start', 'end'} <= set(s):
                raise ValueError(f'sub[{k}] needs text, start, end')
            out.append((str(s['text']), float(s['start']), float(s['end'])))
        return _require(record, 'vid_name', str), sorted(out, key=lambda x: x[1])
    result = read_jsonl(path, parse, errors)
    records = result[0] if errors == 'skip' else result
    table = dict(records)
    return (table, result[1]) if errors == 'skip' else table
