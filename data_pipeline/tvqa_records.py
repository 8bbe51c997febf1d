"""TVQA questions + subtitles + frames + audio -> TFRecords for MERLOT Reserve finetuning
(spec §7.1, the original `finetune/tvqa/prep_data.py`).

    python -m data_pipeline.tvqa_records --questions tvqa_train.jsonl --subtitles subs.jsonl \
        --frames_dir FRAMES --audio_dir AUDIO --tokenizer BPE.json --out DIR --split train \
        [--num_shards 256]

Inputs: TVQA jsonl questions (data_pipeline/annotations.py: qid, q, a0..a4, answer_idx, ts,
vid_name), the subtitle jsonl of the HERO preprocessing ({vid_name, sub: [{text, start, end}]}),
3 fps frame dumps FRAMES/{vid_name}/*.jpg (TVQA's layout, frame k at k/3 s) and the audio of
each clip AUDIO/{vid_name}.{wav,mp3,m4a,mp4,...} (clips without audio get silent spectrograms
and are counted in the summary).

Per question: 7 segments of 14/3 s centred on the midpoint of the annotated window (rounded to
1/3 s; the clip's midpoint when ts is absent), 3 each way; segments outside the clip are dropped
and the list is padded to 7 by repeating the last one (`num_frames` = the real ones). Each
segment has the frame at its midpoint (shorter side 450, longer <= 800, JPEG q75), the
subtitles overlapping it, and audio resampled to 22620 Hz but analysed as 22050 Hz, which gives
exactly 180 spectrogram frames = 3 x 60 per segment; the 7 spectrograms (+ the playback-speed
column) share one magic number and are stored as 180 x 65 grayscale JPEGs. The query is
"<st>% to <ed>%" (the window as percent of the clip) + START + question.

Record keys: id, vid_name, magic_number, qa_query, qa_label (-1 on test), num_frames,
qa_choice_{0..4}, c{i:02d}/image_encoded, c{i:02d}/spec_encoded, c{i:02d}/sub.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
from collections.abc import Sequence

import numpy as np

from data_pipeline import annotations, media
from data_pipeline import spectrogram as spec
from data_pipeline.tokenizer import START

NUM_SEGMENTS = 7
SEGMENT_SECONDS = 14.0 / 3.0
FPS = 3.0
AUDIO_RATE = 22620            # resampled to this, analysed as 22050 (spec §7.1)
SPEC_FRAMES = 180
NUM_CHOICES = 5
FRAME_SHORT_SIDE, FRAME_LONG_SIDE = 450, 800
AUDIO_EXTENSIONS = ('.wav', '.mp3', '.m4a', '.flac', '.ogg', '.mp4', '.mkv', '.webm')


def segment_windows(ts: tuple[float, float] | None, duration: float) -> tuple[list, int]:
    """(7 (start, end) windows, number of real ones) for a question window `ts` in a clip."""
    mid = (ts[0] + ts[1]) / 2 if ts else duration / 2
    mid = round(mid * 3) / 3
    windows = [(mid + (j - 3.5) * SEGMENT_SECONDS, mid + (j - 2.5) * SEGMENT_SECONDS)
               for j in range(NUM_SEGMENTS)]
    real = [w for w in windows if w[1] > 0 and w[0] < duration] or [windows[3]]
    return real + [real[-1]] * (NUM_SEGMENTS - len(real)), len(real)


def window_query(ts: tuple[float, float] | None, duration: float) -> str:
    if not ts or duration <= 0:
        return '0% to 100%'
    st, ed = (min(100, max(0, round(100 * t / duration))) for t in ts)
    return f'{st}% to {ed}%'


def frame_files(frames_dir: str, vid_name: str) -> list[str]:
    files = sorted(glob.glob(os.path.join(frames_dir, vid_name, '*.jpg')))
    if not files:
        raise FileNotFoundError(f'no frames in {os.path.join(frames_dir, vid_name)}')
    return files


def audio_file(audio_dir: str | None, vid_name: str) -> str | None:
    if not audio_dir:
        return None
    for ext in AUDIO_EXTENSIONS:
        path = os.path.join(audio_dir, vid_name + ext)
        if os.path.exists(path):
            return path
    return None


def segment_spectrograms(wav: np.ndarray | None, windows: Sequence[tuple[float, float]]):
    """[7, 180, 65] float32 log-mel (+ speed column 1) of the windows of a 22620 Hz waveform."""
    n = round(SEGMENT_SECONDS * AUDIO_RATE)
    out = np.zeros((len(windows), SPEC_FRAMES, spec.N_MELS + 1), np.float32)
    out[..., -1] = 1.0
    if wav is None:
        return out
    for i, (start, _) in enumerate(windows):
        piece = spec.take_window(wav, max(start, 0.0), n, sr=AUDIO_RATE)
        out[i, :, :-1] = spec.log_mel_spectrogram(piece).T[:SPEC_FRAMES]
    return out


def encode_spectrograms(specs: np.ndarray) -> tuple[list[bytes], float]:
    """One magic number for all segments (spec §7.1), then a grayscale JPEG per segment."""
    magic = 255.0 / max(float(np.percentile(specs[..., :-1], 99)), 1.0)
    quantised = np.minimum(specs * magic, 255.0).astype(np.uint8)
    return [media.encode_jpeg(q, quality=spec.SPEC_JPEG_QUALITY) for q in quantised], magic


def subtitles_in(subs: Sequence[tuple[str, float, float]], start: float, end: float) -> str:
    return ' '.join(text for text, s, e in subs if e > start and s < end)


def make_record(question: annotations.QAExample, subs, frames: list[str], wav, encode) -> bytes:
    import tensorflow as tf
    duration = len(frames) / FPS
    if wav is not None:
        duration = max(duration, len(wav) / AUDIO_RATE)
    windows, real = segment_windows(question.ts, duration)
    encoded_specs, magic = encode_spectrograms(segment_spectrograms(wav, windows))
    query = encode(window_query(question.ts, duration)) + [START] + encode(question.q)
    feature = {}

    def ints(values):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=list(values)))

    def raw(value: bytes):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))
    feature['id'] = raw(question.qid.encode())
    feature['vid_name'] = raw(question.vid_name.encode())
    feature['magic_number'] = tf.train.Feature(float_list=tf.train.FloatList(value=[magic]))
    feature['qa_query'] = ints(query)
    feature['qa_label'] = ints([-1 if question.answer_idx is None else question.answer_idx])
    feature['num_frames'] = ints([real])
    for k, answer in enumerate(question.answers):
        feature[f'qa_choice_{k}'] = ints(encode(answer))
    for i, (start, end) in enumerate(windows):
        index = int(np.clip(round((start + end) / 2 * FPS), 0, len(frames) - 1))
        with open(frames[index], 'rb') as f:
            image = media.decode_jpeg(f.read(), channels=3)
        image = media.resize_for_storage(image, FRAME_SHORT_SIDE, FRAME_LONG_SIDE)
        feature[f'c{i:02d}/image_encoded'] = raw(media.encode_jpeg(image))
        feature[f'c{i:02d}/spec_encoded'] = raw(encoded_specs[i])
        feature[f'c{i:02d}/sub'] = ints(encode(subtitles_in(subs, start, end)))
    example = tf.train.Example(features=tf.train.Features(feature=feature))
    return example.SerializeToString()


def parse_record(data: bytes) -> dict:
    """Record bytes -> dict: id, vid_name (str), magic (float), query, choices (5 lists),
    label, num_frames (int), images (7 JPEG bytes), specs (7 JPEG bytes), subs (7 lists)."""
    import tensorflow as tf
    f = tf.train.Example.FromString(data).features.feature

    def ints(key):
        return list(f[key].int64_list.value)
    return dict(id=f['id'].bytes_list.value[0].decode(),
                vid_name=f['vid_name'].bytes_list.value[0].decode(),
                magic=float(f['magic_number'].float_list.value[0]), query=ints('qa_query'),
                choices=[ints(f'qa_choice_{k}') for k in range(NUM_CHOICES)],
                label=ints('qa_label')[0], num_frames=ints('num_frames')[0],
                images=[f[f'c{i:02d}/image_encoded'].bytes_list.value[0]
                        for i in range(NUM_SEGMENTS)],
                specs=[f[f'c{i:02d}/spec_encoded'].bytes_list.value[0]
                       for i in range(NUM_SEGMENTS)],
                subs=[ints(f'c{i:02d}/sub') for i in range(NUM_SEGMENTS)])


def decode_specs(record: dict) -> np.ndarray:
    """[7, 180, 65] float32 spectrograms of a parsed record (divided by its magic number)."""
    return np.stack([media.decode_jpeg(s, channels=1)[..., 0].astype(np.float32)
                     for s in record['specs']]) / np.float32(record['magic'])


def prepare(questions: str, subtitles: str, frames_dir: str, audio_dir: str | None,
            tokenizer: str, out: str, split: str, num_shards: int = 1) -> dict:
    """Write OUT/{split}{shard:03d}of{num_shards:03d}.tfrecord; returns a summary."""
    import tensorflow as tf

    from data_pipeline.tokenizer import load_tokenizer
    records = annotations.read_tvqa(questions)
    subs = annotations.read_subtitles(subtitles) if subtitles else {}
    encode = load_tokenizer(tokenizer).encode
    os.makedirs(out, exist_ok=True)
    paths = [os.path.join(out, f'{split}{s:03d}of{num_shards:03d}.tfrecord')
             for s in range(num_shards)]
    writers = [tf.io.TFRecordWriter(p) for p in paths]
    no_audio, audio_cache = set(), {}
    try:
        for n, question in enumerate(records):
            vid = question.vid_name
            if vid not in audio_cache:
                path = audio_file(audio_dir, vid)
                audio_cache = {vid: None if path is None else
                               media.load_audio(path, sample_rate=AUDIO_RATE)}
            wav = audio_cache[vid]
            if wav is None:
                no_audio.add(vid)
            record = make_record(question, subs.get(vid, []), frame_files(frames_dir, vid),
                                 wav, encode)
            writers[n % num_shards].write(record)
    finally:
        for w in writers:
            w.close()
    summary = dict(split=split, questions=len(records), files=paths,
                   clips_without_audio=sorted(no_audio))
    with open(os.path.join(out, f'{split}_summary.json'), 'w') as f:
        json.dump(summary, f, indent=1)
    return summary


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--questions', required=True)
    p.add_argument('--subtitles', default='')
    p.add_argument('--frames_dir', required=True)
    p.add_argument('--audio_dir', default='')
    p.add_argument('--tokenizer', required=True)
    p.add_argument('--out', required=True)
    p.add_argument('--split', default='train')
    p.add_argument('--num_shards', type=int, default=1)
    a = p.parse_args(argv)
    summary = prepare(a.questions, a.subtitles, a.frames_dir, a.audio_dir or None, a.tokenizer,
                      a.out, a.split, a.num_shards)
    print(json.dumps({k: v for k, v in summary.items() if k != 'files'}))
    return summary


if __name__ == '__main__':
    main()
