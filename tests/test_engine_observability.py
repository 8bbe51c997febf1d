"""metrics.jsonl, TensorBoard events, the progress line, parameter overview and profiler trace."""
import logging
import os

from engine_utils import lm_config, read_metrics

from trainer.examples.lm import build_task
from trainer.loop import train


def test_metrics_progress_and_profile(tmp_path, caplog):
    config = lm_config(steps=10, log_every=5, profile_start=2, profile_steps=2)
    with caplog.at_level(logging.INFO):
        train(config, str(tmp_path), build_task(config))
    rows = read_metrics(tmp_path)
    assert [r['step'] for r in rows] == [5, 10]
    assert {'loss', 'accuracy', 'grad_norm', 'lr', 'nonfinite'} <= set(rows[0])
    assert os.listdir(tmp_path / 'tensorboard')
    profile_files = [f for _, _, files in os.walk(tmp_path / 'profile') for f in files]
    assert profile_files, 'profiler trace missing'
    text = caplog.text
    assert 'step 10/10' in text and 'examples/s' in text and 'ETA' in text
    assert 'total: 74,816 parameters' in text
    assert 'memory' in text and 'compiled in' in text
