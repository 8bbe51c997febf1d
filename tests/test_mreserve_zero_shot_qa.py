"""Zero-shot multiple-choice video QA (spec §6.3): MSRVTT-QA-style questions -> MASK prompts,
an answer vocabulary as the label space, scoring on real videos with a tiny model loaded from
a params export, and the metric on hand-made logits."""
import json

import jax
import numpy as np
import pytest

from configs.mreserve import pretrain
from data_pipeline.annotations import AnnotationError
from data_pipeline.qa_annotations import read_msrvtt_qa
from mreserve import zero_shot_qa
from mreserve.model_config import ModelConfig
from mreserve.params import init_params
from trainer import params_io


@pytest.mark.parametrize('question, prompt', [
    ('what is a man doing?', 'a man is <|MASK|>.'),
    ('What are the kids playing?', 'the kids are playing <|MASK|>.'),
    ('who is talking about cars?', '<|MASK|> is talking about cars.'),
    ('where is the woman?', 'the woman is in <|MASK|>.'),
    ('how many people are dancing?', 'there are <|MASK|> people dancing.'),
    ('what is shown?', 'shown is <|MASK|>.'),
    ('is the man singing?', 'question: is the man singing? answer: <|MASK|>'),
])
def test_question_to_prompt(question, prompt):
    assert zero_shot_qa.question_to_prompt(question) == prompt


def test_vocabulary_and_metrics_hand_computed():
    vocab = zero_shot_qa.answer_vocabulary(['dog', 'cat', 'Dog', 'car', 'cat', 'dog', 'ant'], 3)
    assert vocab == ['dog', 'cat', 'ant']           # counts 3, 2, then ties alphabetical
    logits = np.array([[3, 2, 1], [1, 3, 2], [0, 1, 2], [5, 0, 0]], np.float32)
    out = zero_shot_qa.mc_metrics(logits, ['dog', 'ant', 'car', 'cat'], vocab)
    # top-1: dog right, ant predicted cat, car not in vocabulary, cat predicted dog -> 1/4
    assert out['accuracy'] == 25.0
    # top-5 (all 3 options): every in-vocabulary answer is found -> 3/4
    assert out['top5'] == 75.0 and out['in_vocabulary'] == 75.0 and out['num_questions'] == 4


def test_msrvtt_json_malformed_entries_have_line_numbers(tmp_path):
    path = tmp_path / 'test_qa.json'
    path.write_text('[\n'
                    '  {"id": 0, "video_id": 7010, "question": "what is a man doing?",\n'
                    '   "answer": "cooking", "category_id": 0},\n'
                    '  {"id": 1, "video_id": 7010, "answer": "dog"},\n'
                    '  {"id": 2, "video_id": 7011, "question": "  ", "answer": "x"},\n'
                    '  {"id": 3, "video_id": 7011, "question": "who sings?", "answer": "man"}\n'
                    ']\n')
    with pytest.raises(AnnotationError) as error:
        read_msrvtt_qa(str(path))
    assert [line for line, _ in error.value.problems] == [4, 5]
    good, problems = read_msrvtt_qa(str(path), errors='skip')
    assert [q.qid for q in good] == ['0', '3'] and good[0].video_id == '7010'


def test_zero_shot_qa_on_real_videos_from_an_export(tmp_path, media_dir, shared_dir):
    config = pretrain.get_config('variant=tiny')
    model_config = ModelConfig.from_config(config)
    params = jax.tree.map(np.asarray, jax.jit(
        lambda r: init_params(model_config, r))(jax.random.key(0)))
    params = jax.tree.map(lambda x: getattr(x, 'value', x), params,
                          is_leaf=lambda x: hasattr(x, 'value'))
    export = tmp_path / 'export'
    params_io.save_params(str(export), params, json.loads(config.to_json_best_effort()))
    videos = tmp_path / 'videos'
    videos.mkdir()
    (videos / 'video1.mp4').symlink_to(media_dir / 'lego.mp4')
    (videos / 'video2.mp4').symlink_to(media_dir / 'realshort.mp4')
    questions = [dict(id=k, video_id=v, question=q, answer=a) for k, (v, q, a) in enumerate([
        (1, 'what is a toy doing?', 'moving'), (1, 'what color is the brick?', 'red'),
        (2, 'what is shown?', 'video'), (2, 'who is talking?', 'nobody')])]
    (tmp_path / 'qa.json').write_text(json.dumps(questions))
    metrics = zero_shot_qa.main([
        '--checkpoint', str(export), '--questions', str(tmp_path / 'qa.json'),
        '--videos', str(videos), '--tokenizer',
        str(shared_dir / 'tokenizers' / 'mreserve_lowercase_bpe.json'), '--max_segments', '2'])
    assert metrics['num_questions'] == 4 and metrics['vocab_size'] == 4
    assert metrics['in_vocabulary'] == 100.0 and metrics['top5'] == 100.0
    written = json.loads((export / 'metrics_zero_shot_qa.json').read_text())
    assert written == metrics
    predictions = json.loads((export / 'predictions_zero_shot_qa.json').read_text())
    assert {p['predicted'] for p in predictions} <= {'moving', 'red', 'video', 'nobody'}
    assert predictions[0]['prompt'] == 'a toy is <|MASK|>.'


def test_video_inputs_layout():
    seg = dict(patches=np.zeros((24, 768), np.float32),
               spectrogram=np.ones((3, 60, 65), np.float32))
    out = zero_shot_qa.video_inputs([seg, seg, seg], [11, 12, 3], (4, 6), length=40)
    # 3 x 18 AUDIOSPAN + 3 prompt tokens = 57 > 40: the first segment's audio is dropped
    assert list(out['tokens'][:18]) == [5] * 18 and list(out['tokens'][36:39]) == [11, 12, 3]
    assert out['subseg_idxs'][0] == 3 and out['subseg_idxs'][38] == 6
    assert out['images'].shape == (3, 24, 768) and out['audio_clips'].shape == (9, 60, 65)
