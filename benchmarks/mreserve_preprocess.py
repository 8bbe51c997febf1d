"""MERLOT Reserve preprocessing rate: seconds of video per CPU-second (mreserve_records).

    .venv/bin/python benchmarks/mreserve_preprocess.py [--copies 4] [--workers N]

Builds a small corpus from ../shared/media in a temporary folder (a talking video: the
frames of cockatoo.mp4 under conversation.wav, with conversation.stm as transcript, copied
``--copies`` times; cockatoo.mp4 at 1280x720; the lego clip in three containers;
realshort.mp4), runs the record writer on it with ``--allow-no-transcript`` and reports:

- ``video_seconds_per_cpu_second``: end to end, all CPU of the run (worker start-up and
  TensorFlow import included) over the seconds of video turned into chunks;
- ``video_seconds_per_worker_cpu_second``: the per-video work alone (steady state).

The last line of output is one JSON object (benchmarks/common.py ``emit``).
"""
from __future__ import annotations

import argparse
import os
import pathlib
import shutil
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / 'shared'


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--copies', type=int, default=4, help='copies of the talking video')
    parser.add_argument('--workers', type=int, default=os.cpu_count() or 1)
    parser.add_argument('--tokenizer', default=str(SHARED / 'tokenizers' /
                                                   'mreserve_lowercase_bpe.json'))
    args = parser.parse_args(argv)
    media = SHARED / 'media'
    if not media.is_dir():
        sys.exit('../shared/media is not present')
    sys.path.insert(0, str(ROOT))
    from benchmarks.common import emit
    from data_pipeline import mreserve_records
    from data_pipeline.mux import make_talking_video

    with tempfile.TemporaryDirectory() as tmp:
        videos, transcripts = pathlib.Path(tmp, 'videos'), pathlib.Path(tmp, 'transcripts')
        videos.mkdir()
        transcripts.mkdir()
        make_talking_video(videos / 'talk0.mp4', media / 'cockatoo.mp4', media / 'conversation.wav')
        for i in range(args.copies):
            if i:
                shutil.copy(videos / 'talk0.mp4', videos / f'talk{i}.mp4')
            shutil.copy(media / 'conversation.stm', transcripts / f'talk{i}.stm')
        for name in ('cockatoo.mp4', 'lego.mp4', 'lego.webm', 'lego.ogv', 'realshort.mp4'):
            shutil.copy(media / name, videos / name)
        summary = mreserve_records.main([
            '--videos', str(videos), '--transcripts', str(transcripts), '--out',
            str(pathlib.Path(tmp, 'out')), '--num-shards', '1', '--tokenizer',
            f'bpe:{args.tokenizer}', '--workers', str(args.workers), '--allow-no-transcript'])
    run = summary['this_run']
    emit(dict(
        benchmark='mreserve_preprocess', workers=args.workers, videos=summary['videos_done'],
        chunks=summary['chunks'], records=summary['records'],
        video_seconds=run['video_seconds'], cpu_seconds=run['cpu_seconds'],
        worker_cpu_seconds=run['worker_cpu_seconds'], wall_seconds=run['wall_seconds'],
        video_seconds_per_cpu_second=run['video_seconds_per_cpu_second'],
        video_seconds_per_worker_cpu_second=round(
            run['video_seconds'] / max(run['worker_cpu_seconds'], 1e-9), 3)))


if __name__ == '__main__':
    main()
