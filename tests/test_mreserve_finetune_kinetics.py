"""Video classification (Kinetics-style) with and without audio: the TFDS builder over a folder
of real clips (../shared/media) + label CSVs, a few finetuning steps + evaluation on it, top-1 /
top-5 on hand-made logits, and beating chance on the learnable synthetic corpus (slow)."""
import os

import numpy as np
import pytest
from mreserve_finetune_utils import FAST_COMPILE, assert_finite, fast_finetune, tiny_config

from data_pipeline.annotations import AnnotationError
from data_pipeline.qa_annotations import read_kinetics_csv
from mreserve import evaluate, finetune_tasks


def test_topk_hand_computed():
    logits = np.array([[0.1, 0.5, 0.2, 0.0, 0.3, 0.9, 0.4],     # ranking 5 1 6 4 2 0 3
                       [1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],     # 0, then ties by index 1 2 3 4
                       [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]])    # 6, then 0 1 2 3
    labels = np.array([2, 5, 6])
    assert finetune_tasks.topk_accuracy(logits, labels, 1) == pytest.approx(100 / 3)
    # row 0: label 2 is 5th -> in top-5; row 1: label 5 is 6th -> not; row 2: top-1
    assert finetune_tasks.topk_accuracy(logits, labels, 5) == pytest.approx(200 / 3)
    assert finetune_tasks.classification_metrics(logits, labels) == {
        'top1': pytest.approx(100 / 3), 'top5': pytest.approx(200 / 3), 'num_examples': 3}


def test_label_csv_malformed_lines(tmp_path):
    path = tmp_path / 'train.csv'
    path.write_text('label,youtube_id,time_start,time_end,split\n'
                    'archery,abc,0,10,train\n'
                    'archery,def,10,5,train\n'
                    'archery,ghi\n'
                    '\n'
                    'bowling,jkl,x,10,train\n')
    with pytest.raises(AnnotationError) as error:
        read_kinetics_csv(str(path))
    assert [line for line, _ in error.value.problems] == [3, 4, 6]
    good, _ = read_kinetics_csv(str(path), errors='skip')
    assert [c.stem for c in good] == ['abc_000000_000010']


def _prepare(tmp_path, media_dir):
    import tensorflow_datasets as tfds

    from data_pipeline.tfds_builders.kinetics import KineticsVideos
    manual = tmp_path / 'manual'
    clips = [('archery', 'a1', 'lego.mp4'), ('bowling', 'b1', 'realshort.mp4'),
             ('archery', 'a2', 'cockatoo.mp4'), ('bowling', 'b2', 'lego.webm'),
             ('bowling', 'bad', 'truncated.mkv')]
    for label, vid, src in clips:
        ext = os.path.splitext(src)[1]
        (manual / 'train' / label).mkdir(parents=True, exist_ok=True)
        (manual / 'train' / label / f'{vid}_000000_000010{ext}').symlink_to(media_dir / src)
    rows = ''.join(f'{label},{vid},0,10,train\n' for label, vid, _ in clips)
    (manual / 'train.csv').write_text('label,youtube_id,time_start,time_end,split\n' + rows +
                                      'bowling,missing,0,10,train\n')
    (manual / 'validate.csv').write_text('label,youtube_id,time_start,time_end\n'
                                         'bowling,b1,0,10\narchery,a1,0,10\n')
    builder = KineticsVideos(data_dir=str(tmp_path / 'tfds'), config='segments_2')
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=str(manual)))
    return builder


@pytest.fixture(scope='module')
def prepared(tmp_path_factory, media_dir):
    root = tmp_path_factory.mktemp('kinetics')
    return root, _prepare(root, media_dir)


def test_builder_reads_folder_and_csv(prepared):
    _, builder = prepared
    assert builder.info.features['label'].names == ['archery', 'bowling']
    # the truncated clip does not decode and the missing one is absent: both skipped
    assert builder.info.splits['train'].num_examples == 4
    assert builder.info.splits['validation'].num_examples == 2


@pytest.mark.parametrize('audio', [True, False])
def test_finetune_few_steps_then_evaluate(prepared, audio):
    root, _ = prepared
    config = tiny_config('kinetics', f'variant=tiny,audio={audio}')
    config.data.source = 'tfds'
    config.data.tfds_dir = str(root / 'tfds')
    config.data.num_segments = 2
    config.data.lang_seq_len = 1 + 18 * 2 if audio else 8
    config.data.num_classes = 2
    config.train.global_batch = 2
    params, history = fast_finetune(config, steps=2)
    assert_finite(history)
    assert ('audio_encoder' in params) == audio
    out = evaluate.evaluate(config, params, 'val', FAST_COMPILE)
    assert out['num_examples'] == 2 and out['top5'] == 100.0     # 2 classes: top-5 is all
    assert {p['id'] for p in out['predictions']} == {'b1_000000_000010', 'a1_000000_000010'}


def test_num_classes_must_match_the_data(prepared):
    root, _ = prepared
    config = tiny_config('kinetics')
    config.data.source = 'tfds'
    config.data.tfds_dir = str(root / 'tfds')
    config.data.num_segments = 2
    config.data.lang_seq_len = 37
    with pytest.raises(ValueError, match='2 classes'):
        finetune_tasks.build_task(config, 'classification')


@pytest.mark.slow
@pytest.mark.parametrize('audio', [True, False])
def test_classification_beats_chance(audio):
    config = tiny_config('kinetics', f'variant=tiny,audio={audio}')
    config.data.synthetic_examples = 256
    params, _ = fast_finetune(config, steps=80)
    config.data.synthetic_examples = 64
    out = evaluate.evaluate(config, params, 'val', FAST_COMPILE)
    print('classification', audio, {k: v for k, v in out.items() if k != 'predictions'},
          'chance top-1 12.5, top-5 62.5')
    assert out['top1'] >= 30.0
