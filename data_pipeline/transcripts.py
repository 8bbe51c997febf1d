"""Timed transcripts -> a list of ``Word(word, start, end)`` (seconds), sorted by start.

With ``cues=True`` the parsers return the subtitle segments instead, ``Cue(text, start, end)``,
which is what HERO's subtitle database is built from.

Formats, chosen by file extension (``parse_transcript``) or called directly on text:

- **WebVTT** (``.vtt``). YouTube auto-captions carry per-word times as inline timestamp tags,
  ``word<00:00:01.500><c> next</c>``: each word starts at the tag before it (the first at the
  cue start) and ends where the next word starts (the last at the cue end). YouTube repeats
  each finished line as plain text in the next cues; in files with timing tags a line equal
  to the previous line is skipped. Lines without tags (plain WebVTT, incl. ``<v Speaker>``
  voice tags) spread their words evenly over the cue.
- **SRT** (``.srt``): words spread evenly over each cue.
- **JSON** (``.json``): a list of ``{"word", "start", "end"}``, or ``{"words": [...]}``.
- **NIST STM** (``.stm``): ``file channel speaker start end [<labels>] text``; ``;;`` lines are
  comments and ``ignore_time_segment_in_scoring`` segments are skipped; words spread evenly.

Malformed input raises :class:`TranscriptError` naming the file and line. A transcript with
no words raises :class:`EmptyTranscriptError` (a subclass), so a preprocessing run can count
"no speech" separately from broken files.
"""
from __future__ import annotations

import html
import json
import os
import re
from typing import NamedTuple


class Word(NamedTuple):
    word: str
    start: float
    end: float


class Cue(NamedTuple):
    """One subtitle segment: a cue line, an SRT block, an STM segment."""
    text: str
    start: float
    end: float


class TranscriptError(ValueError):
    """Malformed transcript; ``str(err)`` is ``"<source>:<line>: <reason>"``."""

    def __init__(self, source, line: int | None, reason: str):
        self.source, self.line, self.reason = str(source), line, reason
        where = self.source if line is None else f'{self.source}:{line}'
        super().__init__(f'{where}: {reason}')


class EmptyTranscriptError(TranscriptError):
    """The transcript parsed but holds no words."""


_TIME = r'(?:(\d+):)?(\d{1,2}):(\d{2})[.,](\d{1,3})'
_CUE_TIMING = re.compile(rf'^\s*{_TIME}\s*-->\s*{_TIME}(?:\s+.*)?$')
_INLINE_TIME = re.compile(r'<((?:\d+:)?\d{1,2}:\d{2}\.\d{3})>')
_TAG = re.compile(r'</?[a-zA-Z][^>]*>|</[^>]*>')
_SRT_BRACES = re.compile(r'\{\\[^}]*\}')     # SubStation overrides such as {\an8}


def _seconds(h, m, s, frac) -> float:
    return int(h or 0) * 3600 + int(m) * 60 + int(s) + int(frac.ljust(3, '0')) / 1000


def _parse_timestamp(text: str) -> float:
    m = re.fullmatch(_TIME, text.strip())
    if m is None:
        raise ValueError(text)
    return _seconds(*m.groups())


def _clean(text: str) -> str:
    return html.unescape(_TAG.sub('', text)).replace('\u00a0', ' ')


def spread_words(text: str, start: float, end: float) -> list[Word]:
    """Splits ``text`` on whitespace and gives each word an equal share of ``[start, end]``."""
    words = text.split()
    if not words:
        return []
    step = (end - start) / len(words)
    return [Word(w, start + i * step, start + (i + 1) * step) for i, w in enumerate(words)]


def _timed_line(line: str, start: float, end: float, source, lineno: int) -> list[Word]:
    """Words of a cue line carrying ``<hh:mm:ss.mmm>`` tags (YouTube auto-captions)."""
    pieces = _INLINE_TIME.split(line)        # text, time, text, time, text ...
    times = [start] + [_parse_timestamp(t) for t in pieces[1::2]]
    words: list[tuple[str, float]] = []
    for k, (text, t) in enumerate(zip(pieces[0::2], times)):
        if k and t < times[k - 1] - 1e-3:
            raise TranscriptError(source, lineno, f'word times go backwards ({times[k - 1]:.3f}s'
                                                  f' then {t:.3f}s, cue starts {start:.3f}s)')
        words += [(w, t) for w in _clean(text).split()]
    out = []
    for i, (w, t) in enumerate(words):
        t_end = words[i + 1][1] if i + 1 < len(words) else end
        out.append(Word(w, t, max(t, t_end)))
    return out


def _cues(lines: list[str], source, srt: bool):
    """Yields (start, end, [(lineno, text), ...]) per cue of WebVTT or SRT text."""
    i = 0
    while i < len(lines):
        m = _CUE_TIMING.match(lines[i])
        if m is None:
            if '-->' in lines[i]:
                raise TranscriptError(source, i + 1, f'bad cue timing {lines[i].strip()!r}')
            i += 1
            continue
        g = m.groups()
        start, end = _seconds(*g[:4]), _seconds(*g[4:])
        if end < start:
            raise TranscriptError(source, i + 1, f'cue ends ({end:.3f}s) before it starts '
                                                 f'({start:.3f}s)')
        body, i = [], i + 1
        # WebVTT ends a cue at an empty line only (YouTube's cues start with a " " line);
        # SRT files in the wild also end cues at whitespace-only lines.
        while i < len(lines) and (lines[i].strip() if srt else lines[i]):
            if _CUE_TIMING.match(lines[i]):
                break
            body.append((i + 1, lines[i]))
            i += 1
        if srt and body and body[-1][1].strip().isdigit() and i < len(lines) \
                and _CUE_TIMING.match(lines[i]):
            body.pop()   # an SRT index directly followed by the next timing line
        yield start, end, body


def parse_webvtt(text: str, source='<vtt>', cues: bool = False) -> list[Word] | list[Cue]:
    """Words (or cue lines) of a WebVTT document (YouTube per-word timing or plain cues)."""
    lines = text.lstrip('\ufeff').splitlines()
    if not lines or not lines[0].startswith('WEBVTT'):
        raise TranscriptError(source, 1, 'missing WEBVTT header')
    segments: list[list[Word]] = []
    youtube = any(_INLINE_TIME.search(line) for line in lines)
    previous_line = None
    for start, end, body in _cues(lines, source, srt=False):
        for lineno, line in body:
            plain = ' '.join(_clean(_INLINE_TIME.sub('', line)).split())
            if not plain or (youtube and plain == previous_line):
                continue
            previous_line = plain
            if _INLINE_TIME.search(line):
                segments.append(_timed_line(line, start, end, source, lineno))
            else:
                segments.append(spread_words(plain, start, end))
    return _finish(segments, source, cues)


def parse_srt(text: str, source='<srt>', cues: bool = False) -> list[Word] | list[Cue]:
    """Words of a SubRip document, spread evenly over each cue (or the cues)."""
    lines = text.lstrip('\ufeff').splitlines()
    segments = []
    for start, end, body in _cues(lines, source, srt=True):
        cue_text = ' '.join(_clean(_SRT_BRACES.sub('', line)) for _, line in body)
        segments.append(spread_words(cue_text, start, end))
    return _finish(segments, source, cues)


def parse_word_json(text: str, source='<json>', cues: bool = False) -> list[Word] | list[Cue]:
    """``[{"word": str, "start": float, "end": float}, ...]`` or ``{"words": [...]}``.

    Items may instead hold ``"text"`` (a subtitle, as in HERO's ``sub`` lists); its words
    are spread evenly over it.
    """
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise TranscriptError(source, e.lineno, f'invalid JSON ({e.msg})') from e
    if isinstance(data, dict) and 'words' in data:
        data = data['words']
    if not isinstance(data, list):
        raise TranscriptError(source, None, 'expected a list of {word, start, end} objects')
    segments = []
    for i, item in enumerate(data):
        try:
            key = 'text' if isinstance(item, dict) and 'text' in item else 'word'
            word, start, end = str(item[key]), float(item['start']), float(item['end'])
        except (TypeError, KeyError, ValueError) as e:
            raise TranscriptError(source, None, f'item {i}: expected {{word, start, end}}, '
                                                f'got {item!r}') from e
        if not end >= start >= 0:
            raise TranscriptError(source, None, f'item {i}: bad times {start}..{end}')
        segments.append(spread_words(word, start, end))
    return _finish(segments, source, cues)


def parse_stm(text: str, source='<stm>', cues: bool = False) -> list[Word] | list[Cue]:
    """NIST STM: ``file channel speaker start end [<labels>] text`` per segment."""
    segments = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.startswith(';;'):
            continue
        fields = line.split(None, 5)
        if len(fields) < 5:
            raise TranscriptError(source, lineno, 'expected "file channel speaker start end '
                                                  'text"')
        try:
            start, end = float(fields[3]), float(fields[4])
        except ValueError as e:
            raise TranscriptError(source, lineno, f'bad times {fields[3]!r} {fields[4]!r}') from e
        if end < start:
            raise TranscriptError(source, lineno, f'segment ends ({end}) before it starts '
                                                  f'({start})')
        rest = fields[5] if len(fields) > 5 else ''
        if rest.startswith('<'):                 # optional <o,f0,male> label field
            rest = rest.split('>', 1)[1] if '>' in rest else ''
        if 'ignore_time_segment_in_scoring' in rest:
            continue
        segments.append(spread_words(rest, start, end))
    return _finish(segments, source, cues)


def _finish(segments: list[list[Word]], source, cues: bool) -> list[Word] | list[Cue]:
    """Sorted words, or with ``cues`` one Cue per non-empty segment; raises if there are none."""
    segments = [seg for seg in segments if seg]
    if not segments:
        raise EmptyTranscriptError(source, None, 'transcript has no words')
    if cues:
        return sorted((Cue(' '.join(w.word for w in seg), seg[0].start, seg[-1].end)
                       for seg in segments), key=lambda c: c.start)
    return sorted((w for seg in segments for w in seg), key=lambda w: w.start)


PARSERS = {'.vtt': parse_webvtt, '.srt': parse_srt, '.json': parse_word_json, '.stm': parse_stm}


def parse_transcript(path, cues: bool = False) -> list[Word] | list[Cue]:
    """Parses a transcript file, choosing the format by extension (.vtt, .srt, .json, .stm).

    Returns words, or with ``cues`` the subtitle segments (HERO's ``sub`` list, spec hero §3.2).
    """
    ext = os.path.splitext(os.fspath(path))[1].lower()
    if ext not in PARSERS:
        raise TranscriptError(path, None, f'unknown transcript format {ext!r}; '
                                          f'expected one of {sorted(PARSERS)}')
    try:
        with open(path, encoding='utf-8') as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise TranscriptError(path, None, f'cannot read ({e})') from e
    return PARSERS[ext](text, source=os.fspath(path), cues=cues)


def words_to_json(words: list[Word]) -> str:
    """The JSON word-list format read by :func:`parse_word_json`."""
    return json.dumps([{'word': w.word, 'start': round(w.start, 3), 'end': round(w.end, 3)}
                       for w in words])


def _vtt_time(t: float) -> str:
    ms = round(t * 1000)
    return f'{ms // 3600000:02d}:{ms // 60000 % 60:02d}:{ms // 1000 % 60:02d}.{ms % 1000:03d}'


def words_to_youtube_vtt(words: list[Word], words_per_cue: int = 8) -> str:
    """WebVTT with per-word timing tags in YouTube's auto-caption layout (incl. the repeated
    previous line), which :func:`parse_webvtt` reads back to the same words and starts."""
    out = ['WEBVTT', 'Kind: captions', 'Language: en', '']
    previous = ''
    for i in range(0, len(words), words_per_cue):
        cue = words[i:i + words_per_cue]
        line = cue[0].word + ''.join(f'<{_vtt_time(w.start)}><c> {w.word}</c>' for w in cue[1:])
        out += [f'{_vtt_time(cue[0].start)} --> {_vtt_time(cue[-1].end)} align:start '
                'position:0%', previous or ' ', line, '']
        previous = ' '.join(w.word for w in cue)
    return '\n'.join(out) + '\n'
