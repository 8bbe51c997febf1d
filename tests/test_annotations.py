"""Annotation parsers (data_pipeline/annotations.py): released formats, malformed lines reported
with their line numbers."""
import json

import pytest

from data_pipeline import annotations as ann


def write(path, lines):
    path.write_text('\n'.join(x if isinstance(x, str) else json.dumps(x) for x in lines) + '\n')
    return path


TVR = {'desc_id': 90200, 'desc': 'A man opens the door.', 'vid_name': 'show_s01e01_seg02_clip_00',
       'duration': 61.5, 'ts': [3.2, 9.9], 'type': 'v'}
TVQA = {'qid': 7, 'q': 'What does the man hold?', 'a0': 'A cup', 'a1': 'A pen', 'a2': 'A key',
        'a3': 'A phone', 'a4': 'A book', 'answer_idx': 3, 'ts': '12.5-20.01',
        'vid_name': 'show_s01e02_seg01_clip_03'}


def test_tvr(tmp_path):
    test_line = {k: v for k, v in TVR.items() if k != 'ts'}
    rows = ann.read_tvr(write(tmp_path / 'tvr.jsonl', [TVR, '', test_line]))
    assert rows[0] == ann.MomentQuery('90200', 'A man opens the door.',
                                      'show_s01e01_seg02_clip_00', 61.5, (3.2, 9.9), 'v')
    assert rows[1].ts is None


def test_tvr_malformed_lines_reported_with_numbers(tmp_path):
    lines = [TVR, '{not json', dict(TVR, ts=[5, 1]), {k: v for k, v in TVR.items()
                                                       if k != 'desc'}, TVR, '[1, 2]']
    with pytest.raises(ann.AnnotationError) as error:
        ann.read_tvr(write(tmp_path / 'tvr.jsonl', lines))
    assert [line for line, _ in error.value.problems] == [2, 3, 4, 6]
    message = str(error.value)
    assert 'tvr.jsonl:2:' in message and 'tvr.jsonl:4: missing field' in message
    assert 'not a window' in message
    rows, problems = ann.read_tvr(tmp_path / 'tvr.jsonl', errors='skip')
    assert len(rows) == 2 and [p[0] for p in problems] == [2, 3, 4, 6]


def test_tvqa(tmp_path):
    lines = [TVQA, dict(TVQA, ts='NaN-NaN'), {k: v for k, v in TVQA.items()
                                               if k != 'answer_idx'}]
    rows = ann.read_tvqa(write(tmp_path / 'tvqa.jsonl', lines))
    assert rows[0].answers == ('A cup', 'A pen', 'A key', 'A phone', 'A book')
    assert rows[0].answer_idx == 3 and rows[0].ts == (12.5, 20.01) and rows[0].qid == '7'
    assert rows[1].ts is None and rows[2].answer_idx is None


def test_tvqa_malformed(tmp_path):
    lines = [dict(TVQA, answer_idx=5), dict(TVQA, ts='12.5'), {k: v for k, v in TVQA.items()
                                                               if k != 'a4'}, TVQA]
    with pytest.raises(ann.AnnotationError) as error:
        ann.read_tvqa(write(tmp_path / 'tvqa.jsonl', lines))
    problems = dict(error.value.problems)
    assert sorted(problems) == [1, 2, 3]
    assert 'answer_idx 5' in problems[1] and 'st-ed' in problems[2] and "'a4'" in problems[3]


def test_violin_pairs(tmp_path):
    lines = [{'desc_id': 'clip7-0-1', 'desc': 'He is happy.', 'vid_name': 'clip7'},
             {'desc_id': 'clip7-0-0', 'desc': 'He is sad.', 'vid_name': 'clip7'},
             {'desc_id': 'clip8-3-1', 'desc': 'No partner.', 'vid_name': 'clip8'},
             {'desc_id': 'clip9-x', 'desc': 'Bad id.', 'vid_name': 'clip9'}]
    rows, problems = ann.read_violin(write(tmp_path / 'v.jsonl', lines), errors='skip')
    assert [p[0] for p in problems] == [4] and 'does not end in -0 or -1' in problems[0][1]
    assert rows[0].label == 1 and rows[0].pair_id == 'clip7-0-0'
    pairs = ann.pair_statements(rows)
    assert [(a.desc, b.desc) for a, b in pairs] == [('He is happy.', 'He is sad.')]


def test_subtitles(tmp_path):
    lines = [{'vid_name': 'v1', 'sub': [{'text': 'b', 'start': 3.0, 'end': 4.0},
                                       {'text': 'a', 'start': 0.5, 'end': 2.0}]},
             {'vid_name': 'v2', 'sub': [{'text': 'x'}]}]
    with pytest.raises(ann.AnnotationError, match=r's\.jsonl:2: sub\[0\] needs'):
        ann.read_subtitles(write(tmp_path / 's.jsonl', lines))
    table, problems = ann.read_subtitles(tmp_path / 's.jsonl', errors='skip')
    assert table == {'v1': [('a', 0.5, 2.0), ('b', 3.0, 4.0)]} and problems[0][0] == 2


def test_tfds_builders_read_manual_dir(tmp_path):
    tfds = pytest.importorskip('tensorflow_datasets')
    from data_pipeline.tfds_builders import tvqa, tvr
    manual = tmp_path / 'manual'
    manual.mkdir()
    write(manual / 'tvr_train_release.jsonl', [TVR, dict(TVR, desc_id=2, ts=[0, 1.5])])
    write(manual / 'tvr_val_release.jsonl', [dict(TVR, desc_id=3)])
    write(manual / 'tvqa_val.jsonl', [TVQA, {k: v for k, v in TVQA.items()
                                             if k != 'answer_idx'} | {'qid': 8}])
    config = tfds.download.DownloadConfig(manual_dir=str(manual))
    builder = tvr.TvrAnnotations(data_dir=str(tmp_path / 'tfds'))
    builder.download_and_prepare(download_config=config)
    assert builder.info.splits['train'].num_examples == 2
    rows = list(tfds.as_numpy(builder.as_dataset(split='validation')))
    assert rows[0]['desc_id'] == b'3' and rows[0]['ts'].tolist() == pytest.approx([3.2, 9.9])
    qa = tvqa.TvqaAnnotations(data_dir=str(tmp_path / 'tfds'))
    qa.download_and_prepare(download_config=config)
    rows = sorted(tfds.as_numpy(qa.as_dataset(split='validation')), key=lambda r: r['qid'])
    assert [r['answer_idx'] for r in rows] == [3, -1]
    assert rows[0]['answers'][3] == b'A phone'
    # malformed lines stop the build with their line numbers
    write(manual / 'tvr_train_release.jsonl', [TVR, '{broken'])
    with pytest.raises(ann.AnnotationError, match='tvr_train_release.jsonl:2'):
        tvr.TvrAnnotations(data_dir=str(tmp_path / 'tfds2')).download_and_prepare(
            download_config=config)
