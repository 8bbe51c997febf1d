"""TVR annotations (Lei et al. 2020) as a TFDS dataset read from the user's local copy."""
from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from data_pipeline import annotations
from data_pipeline.tfds_builders.common import split_files


class TvrAnnotations(tfds.core.GeneratorBasedBuilder):
    """TVR queries: desc_id, desc, vid_name, duration, ts ([-1, -1] when absent), type."""
    VERSION = tfds.core.Version('1.0.0')
    # tfds finds this file through importlib_resources, which not every environment has
    code_path = epath.Path(__file__)
    RELEASE_NOTES = {'1.0.0': 'Released TVR jsonl files.'}
    MANUAL_DOWNLOAD_INSTRUCTIONS = """
    Download the TVR annotations (https://github.com/jayleicn/TVRetrieval, data/) and place the
    jsonl files in `manual_dir`, named tvr_*{train,val,test}*.jsonl, e.g.
    tvr_train_release.jsonl, tvr_val_release.jsonl, tvr_test_public_release.jsonl.
    """

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description='TVR moment retrieval queries (annotations only; features and '
                        'subtitles are joined by vid_name).',
            features=tfds.features.FeaturesDict({
                'desc_id': tfds.features.Text(), 'desc': tfds.features.Text(),
                'vid_name': tfds.features.Text(),
                'duration': tfds.features.Scalar(dtype=np.float32),
                'ts': tfds.features.Tensor(shape=(2,), dtype=np.float32),
                'type': tfds.features.Text()}),
            homepage='https://tvr.cs.unc.edu/')

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        return {split: self._generate_examples(path)
                for split, path in split_files(dl_manager.manual_dir, 'tvr').items()}

    def _generate_examples(self, path):
        for q in annotations.read_tvr(path):
            yield q.desc_id, {
                'desc_id': q.desc_id, 'desc': q.desc, 'vid_name': q.vid_name,
                'duration': np.float32(-1 if q.duration is None else q.duration),
                'ts': np.asarray(q.ts if q.ts else (-1, -1), np.float32), 'type': q.type}

