"""TVQA annotations (Lei et al. 2018) as a TFDS dataset read from the user's local copy.
Shared by HERO and MERLOT Reserve (no model code here)."""
from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from data_pipeline import annotations
from data_pipeline.tfds_builders.common import split_files


class TvqaAnnotations(tfds.core.GeneratorBasedBuilder):
    """TVQA questions: qid, q, answers (5), answer_idx (-1 on test), ts ([-1, -1] when
    absent), vid_name."""
    VERSION = tfds.core.Version('1.0.0')
    # tfds finds this file through importlib_resources, which not every environment has
    code_path = epath.Path(__file__)
    RELEASE_NOTES = {'1.0.0': 'Released TVQA jsonl files.'}
    MANUAL_DOWNLOAD_INSTRUCTIONS = """
    Download the TVQA QA annotations (https://tvqa.cs.unc.edu/download_tvqa.html, tvqa_qa_release)
    and place the jsonl files in `manual_dir`, named tvqa*{train,val,test}*.jsonl, e.g.
    tvqa_train.jsonl, tvqa_val.jsonl, tvqa_test_public.jsonl.
    """

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description='TVQA multiple-choice questions (annotations only).',
            features=tfds.features.FeaturesDict({
                'qid': tfds.features.Text(), 'q': tfds.features.Text(),
                'answers': tfds.features.Sequence(tfds.features.Text(), length=5),
                'answer_idx': tfds.features.Scalar(dtype=np.int32),
                'ts': tfds.features.Tensor(shape=(2,), dtype=np.float32),
                'vid_name': tfds.features.Text()}),
            homepage='https://tvqa.cs.unc.edu/')

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        return {split: self._generate_examples(path)
                for split, path in split_files(dl_manager.manual_dir, 'tvqa').items()}

    def _generate_examples(self, path):
        for ex in annotations.read_tvqa(path):
            yield ex.qid, {
                'qid': ex.qid, 'q': ex.q, 'answers': list(ex.answers),
                'answer_idx': np.int32(-1 if ex.answer_idx is None else ex.answer_idx),
                'ts': np.asarray(ex.ts if ex.ts else (-1, -1), np.float32),
                'vid_name': ex.vid_name}
