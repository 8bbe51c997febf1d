"""Kinetics-style video classification as a TFDS dataset read from the user's local copy:
a folder of clips plus label CSVs (`manual_dir`). No model code here.

manual_dir holds `{train,validate|val,test}.csv` (the released Kinetics format: label,
youtube_id, time_start, time_end[, split]; parsed by data_pipeline/qa_annotations.py, malformed
lines reported with their line numbers) and the clips anywhere below it, named
`{youtube_id}_{time_start:06d}_{time_end:06d}.{mp4,webm,mkv,...}` (the official downloader's
names) or `{youtube_id}.*`. Clips that are missing or do not decode are skipped and counted in
the dataset description's log.

Each clip is cut into `num_segments` equal segments (the builder config `segments_N`); per
segment the frame at its midpoint (black bars trimmed, shorter side 288, JPEG q75) and the
zero-shot audio features [3, 60, 65] of the segment's audio centre-padded to 5 s (spec §6.3;
zeros when the clip has no audio, `has_audio` false). Labels are the sorted label names of all
CSVs.
"""
from __future__ import annotations

import logging
import os

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from data_pipeline import media
from data_pipeline.qa_annotations import read_kinetics_csv

log = logging.getLogger(__name__)
SPLIT_CSVS = (('train', ('train.csv',)), ('validation', ('validate.csv', 'val.csv')),
              ('test', ('test.csv',)))
VIDEO_EXTENSIONS = ('.mp4', '.webm', '.mkv', '.avi', '.mov', '.m4v', '.ogv')


def split_csvs(manual_dir) -> dict[str, str]:
    found = {}
    for split, names in SPLIT_CSVS:
        for name in names:
            path = os.path.join(manual_dir, name)
            if os.path.exists(path):
                found[split] = path
                break
    if not found:
        raise FileNotFoundError(f'no train.csv / validate.csv / test.csv in {manual_dir}')
    return found


def index_videos(manual_dir) -> dict[str, str]:
    out = {}
    for root, _, files in os.walk(manual_dir):
        for name in sorted(files):
            stem, ext = os.path.splitext(name)
            if ext.lower() in VIDEO_EXTENSIONS:
                out.setdefault(stem, os.path.join(root, name))
    return out


def clip_segments(path: str, num_segments: int) -> tuple[list[bytes], np.ndarray, bool]:
    """(JPEG per segment, spectrograms [S, 3, 60, 65] float16, has_audio)."""
    from data_pipeline.segments import video_to_segments
    info = media.probe(path, require_video=True)
    step = info.duration / num_segments
    windows = [(i * step, (i + 1) * step) for i in range(num_segments)]
    segments = video_to_segments(path, windows=windows)
    frames = [media.encode_jpeg(media.resize_for_storage(s['frame'])) for s in segments]
    specs = np.stack([s['spectrogram'] for s in segments]).astype(np.float16)
    return frames, specs, bool(info.has_audio)


class KineticsVideos(tfds.core.GeneratorBasedBuilder):
    VERSION = tfds.core.Version('1.0.0')
    code_path = epath.Path(__file__)
    RELEASE_NOTES = {'1.0.0': 'Kinetics-style folders of clips with label CSVs.'}
    BUILDER_CONFIGS = [tfds.core.BuilderConfig(name=f'segments_{n}',
                                               description=f'{n} segments per clip')
                       for n in (2, 4, 8, 16)]
    MANUAL_DOWNLOAD_INSTRUCTIONS = """
    Put the label CSVs (train.csv, validate.csv or val.csv, test.csv: label, youtube_id,
    time_start, time_end) in `manual_dir` and the clips anywhere below it, named
    {youtube_id}_{time_start:06d}_{time_end:06d}.mp4 (or {youtube_id}.mp4).
    """

    @property
    def num_segments(self) -> int:
        return int(self.builder_config.name.split('_')[1])

    def _info(self) -> tfds.core.DatasetInfo:
        n = self.num_segments
        # the label names are read from the CSVs when preparing, from the stored info after
        names = getattr(self, '_names', None)
        label = tfds.features.ClassLabel(names=names) if names else tfds.features.ClassLabel()
        return tfds.core.DatasetInfo(
            builder=self,
            description='Video classification clips: frames + audio features per segment.',
            features=tfds.features.FeaturesDict({
                'id': tfds.features.Text(), 'label': label,
                'frames': tfds.features.Sequence(tfds.features.Image(encoding_format='jpeg'),
                                                 length=n),
                'spectrograms': tfds.features.Tensor(shape=(n, 3, 60, 65), dtype=np.float16),
                'has_audio': tfds.features.Scalar(dtype=np.bool_)}))

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        csvs = split_csvs(dl_manager.manual_dir)
        self._names = sorted({clip.label for path in csvs.values()
                              for clip in read_kinetics_csv(path)})
        self.info.features['label'].names = self._names
        videos = index_videos(dl_manager.manual_dir)
        return {split: self._generate_examples(path, videos)
                for split, path in csvs.items()}

    def _generate_examples(self, csv_path, videos):
        skipped = []
        for clip in read_kinetics_csv(csv_path):
            path = videos.get(clip.stem) or videos.get(clip.youtube_id)
            if path is None:
                skipped.append((clip.stem, 'missing'))
                continue
            try:
                frames, specs, has_audio = clip_segments(path, self.num_segments)
            except (media.MediaError, ValueError) as error:
                skipped.append((clip.stem, str(error)))
                continue
            yield clip.stem, {'id': clip.stem, 'label': clip.label, 'frames': frames,
                              'spectrograms': specs, 'has_audio': has_audio}
        if skipped:
            log.warning('%s: %d clips skipped, e.g. %s', csv_path, len(skipped), skipped[:5])
