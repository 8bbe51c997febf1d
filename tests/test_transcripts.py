"""data_pipeline.transcripts: real WebVTT / STM files from ../shared/media plus inline samples."""
import json

import pytest

from data_pipeline import transcripts as T

# YouTube auto-caption layout; its cues start with a line holding one space (\x20)
YOUTUBE_VTT = """WEBVTT
Kind: captions
Language: en

00:00:00.030 --> 00:00:02.110 align:start position:0%
\x20
hello<00:00:00.359><c> everyone</c><00:00:00.780><c> welcome</c>

00:00:02.110 --> 00:00:02.120 align:start position:0%
hello everyone welcome
\x20

00:00:02.120 --> 00:00:04.000 align:start position:0%
hello everyone welcome
to<00:00:02.500><c.colorE5E5E5> the</c><00:00:03.000><c> show</c>
"""


def test_w3c_example_vtt(media_dir):
    words = T.parse_transcript(media_dir / 'w3c_example.vtt')
    text = ' '.join(w.word for w in words)
    assert len(words) == 96
    assert words[0] == T.Word('We', 9.0, pytest.approx(9.0 + 2 / 6))
    assert text.startswith('We are in New York City We are in New York City We\'re actually')
    assert '<' not in text and 'Roger' not in text       # voice tags and <i> are dropped
    assert 'Laughs' in text and 'e-mailed—' in text
    assert words[-1].word == 'here.' and words[-1].end == pytest.approx(38.0)
    assert all(a.start <= b.start for a, b in zip(words, words[1:]))
    assert all(9.0 <= w.start <= w.end <= 38.0 for w in words)


def test_conversation_stm(media_dir):
    path = media_dir / 'conversation.stm'
    words = T.parse_transcript(path)
    lines = path.read_text().splitlines()
    assert len(words) == sum(len(line.split()[5:]) for line in lines)
    assert words[0] == T.Word('Hello?', 6.68, pytest.approx(7.16))
    assert [w.word for w in words[2:4]] == ['Oh,', 'hello.']
    assert words[2].start == 8.436 and words[3].end == pytest.approx(8.876)
    assert words[-1].word == 'now.' and words[-1].end == pytest.approx(29.987)
    # speaker fields are not words; the names occur once each in what is said
    assert [w.word for w in words].count('Diane') == 1 and 'sample' not in {w.word for w in words}


def test_youtube_word_timing():
    words = T.parse_webvtt(YOUTUBE_VTT)
    assert words == [T.Word('hello', 0.03, 0.359), T.Word('everyone', 0.359, 0.78),
                     T.Word('welcome', 0.78, 2.11), T.Word('to', 2.12, 2.5),
                     T.Word('the', 2.5, 3.0), T.Word('show', 3.0, 4.0)]


def test_youtube_vtt_writer_round_trip():
    words = [T.Word(w, 0.4 * i, 0.4 * i + 0.3) for i, w in
             enumerate('a red circle on the blue ground and some more words here'.split())]
    back = T.parse_webvtt(T.words_to_youtube_vtt(words, words_per_cue=5))
    assert [(w.word, w.start) for w in back] == [(w.word, pytest.approx(w.start)) for w in words]


def test_srt():
    srt = ('1\n00:00:01,000 --> 00:00:03,000\n<i>Hello</i> there\nfriend\n\n'
           '2\n00:00:04,000 --> 00:00:05,000\n{\\an8}Bye &amp; thanks\n3\n'
           '00:01:00,000 --> 00:01:01,000\nlast\n')
    words = T.parse_srt(srt, 'x.srt')
    assert [w.word for w in words] == ['Hello', 'there', 'friend', 'Bye', '&', 'thanks', 'last']
    assert words[0] == T.Word('Hello', 1.0, pytest.approx(1 + 2 / 3))
    assert words[-1] == T.Word('last', 60.0, 61.0)


def test_json_words(tmp_path):
    items = [{'word': 'hi', 'start': 0.5, 'end': 0.7}, {'word': 'there', 'start': 0.1, 'end': 0.4}]
    path = tmp_path / 'words.json'
    path.write_text(json.dumps(items))
    assert T.parse_transcript(path) == [T.Word('there', 0.1, 0.4), T.Word('hi', 0.5, 0.7)]
    assert T.parse_word_json(json.dumps({'words': items})) == T.parse_transcript(path)
    assert T.parse_word_json(T.words_to_json(T.parse_transcript(path))) == \
        T.parse_transcript(path)


@pytest.mark.parametrize('name, text, where, message', [
    ('a.vtt', 'WEBVTT\n\n00:01.000 --> 00:0x.000\nhi\n', 'a.vtt:3', 'bad cue timing'),
    ('b.vtt', 'hello\n', 'b.vtt:1', 'missing WEBVTT header'),
    ('c.vtt', 'WEBVTT\n\n00:05.000 --> 00:01.000\nhi\n', 'c.vtt:3', 'ends'),
    ('d.vtt', 'WEBVTT\n\n00:00.000 --> 00:05.000\na<00:00:03.000><c> b</c><00:00:01.000>'
              '<c> c</c>\n', 'd.vtt:4', 'backwards'),
    ('e.stm', 'sample 1 A 1.0 2.0 fine\nsample 1 A x 2.0 broken\n', 'e.stm:2', 'bad times'),
    ('f.stm', 'sample 1 A\n', 'f.stm:1', 'expected'),
    ('g.json', '[{"word": "a", "start": 1}]', 'g.json', 'item 0'),
    ('h.json', '{"words": [', 'h.json:1', 'invalid JSON'),
    ('i.srt', '1\n00:00:01,000 --> 00:00:0,000\nhi\n', 'i.srt:2', 'bad cue timing'),
])
def test_malformed_input_names_file_and_line(tmp_path, name, text, where, message):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(T.TranscriptError, match=message) as err:
        T.parse_transcript(path)
    assert str(err.value).startswith(str(tmp_path / where) + ':')
    assert not isinstance(err.value, T.EmptyTranscriptError)


@pytest.mark.parametrize('name, text', [
    ('a.vtt', 'WEBVTT\nKind: captions\n\n00:01.000 --> 00:02.000\n \n'),
    ('b.json', '[]'), ('c.srt', ''),
    ('d.stm', ';; comment\nsample 1 A 0 5 ignore_time_segment_in_scoring\n'),
])
def test_empty_transcript_is_distinct(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(T.EmptyTranscriptError, match=f'{name}: transcript has no words'):
        T.parse_transcript(path)


def test_unknown_format(tmp_path):
    with pytest.raises(T.TranscriptError, match='unknown transcript format'):
        T.parse_transcript(tmp_path / 'x.txt')


def test_cue_level(media_dir, tmp_path):
    vtt = T.parse_transcript(media_dir / 'w3c_example.vtt', cues=True)
    assert len(vtt) == 14 and vtt[0] == T.Cue('We are in New York City', 9.0, 11.0)
    assert T.Cue('Laughs', 32.5, 33.5) in vtt
    stm = T.parse_transcript(media_dir / 'conversation.stm', cues=True)
    assert len(stm) == 13 and stm[-1] == T.Cue("Oh, I don't hear that in New Jersey now.",
                                               28.445, pytest.approx(29.987))
    assert T.parse_webvtt(YOUTUBE_VTT, cues=True) == [
        T.Cue('hello everyone welcome', 0.03, 2.11), T.Cue('to the show', 2.12, 4.0)]
    subs = tmp_path / 'sub.json'                       # HERO's {text, start, end} subtitles
    subs.write_text(json.dumps([{'text': 'two words', 'start': 1.0, 'end': 2.0}]))
    assert T.parse_transcript(subs, cues=True) == [T.Cue('two words', 1.0, 2.0)]
    assert T.parse_transcript(subs) == [T.Word('two', 1.0, 1.5), T.Word('words', 1.5, 2.0)]
