"""MERLOT Reserve pretraining entry point, and the project's main job.

    python -m mreserve.train --config configs/mreserve/pretrain.py:variant=tiny --workdir DIR

With `data.train_path` set it pretrains on those records. Without it (and `demo.enabled`, the
default) it is the self-contained main job: it builds or reuses the demo data under
`demo.dir` (default DIR/demo: videos, a sentencepiece tokenizer, TFRecord shards;
mreserve/demo_data.py), pretrains on it with the engine (progress line, checkpoints,
metrics) and ends with the zero-shot evaluation on the held-out demo videos
(mreserve/demo_eval.py), printed and written to DIR/zero_shot.json.

`--config.train.steps=0` evaluates the untrained initialisation (the engine's own init for
`seed`), the baseline the trained accuracy is compared with. The engine refuses 0 steps
(`train.steps` must be positive), so that case is handled here without it.
"""
from __future__ import annotations

import json
import logging
import os
import resource
import sys
import time

from absl import flags

from mreserve.task import build_task
from trainer import cli

log = logging.getLogger(__name__)


def _use_demo(config) -> bool:
    return not config.data.get('train_path') and 'demo' in config and config.demo.enabled


# `demo` keys that set the reader/sequence layout of the demo run (`data` keys of the same
# name): the tiny variant itself stays the reference-vector configuration.
DEMO_DATA_KEYS = ('examples_per_record', 'num_segment_groups')


def prepare_demo(config, workdir: str):
    """Builds/reuses the demo data, points `data.train_path` / `data.tokenizer` at it and
    applies the demo's data layout (DEMO_DATA_KEYS)."""
    from mreserve import demo_data
    root = config.demo.dir or os.path.join(workdir, 'demo')
    demo = demo_data.prepare(root, **demo_data.settings_from_config(config))
    config.data.train_path = demo.records
    config.data.tokenizer = demo.tokenizer
    for key in DEMO_DATA_KEYS:
        if config.demo.get(key):
            config.data[key] = int(config.demo[key])
    return demo


def untrained_params(config, task):
    """The parameters the engine starts from (trainer/loop.py: first half of split(seed))."""
    import flax.linen as nn
    import jax
    init_rng, _ = jax.random.split(jax.random.key(config.seed))
    return nn.unbox(jax.jit(lambda r: task.init(r, None))(init_rng))


def zero_shot(config, params, demo, workdir: str, step: int, wall0: float, cpu0: float) -> dict:
    import jax

    from mreserve import demo_eval
    from mreserve.model_config import ModelConfig
    result = demo_eval.evaluate(params, ModelConfig.from_config(config), demo.tokenizer,
                                demo.corpus)
    result.update(step=step, trained=step > 0, job_wall_s=round(time.time() - wall0, 1),
                  job_cpu_s=round(cpu_seconds() - cpu0, 1))
    if jax.process_index() == 0:
        with open(os.path.join(workdir, 'zero_shot.json'), 'w') as f:
            json.dump(result, f, indent=2)
        for name, task in result['tasks'].items():
            log.info('zero-shot %-12s accuracy %.3f (chance %.3f, %d examples)', name,
                     task['accuracy'], task['chance'], task['num_examples'])
        print(f'zero-shot accuracy {result["accuracy"]:.3f} (chance {result["chance"]:.3f}, '
              f'{result["num_examples"]} held-out examples, {result["headline"]}); '
              f'wrote {os.path.join(workdir, "zero_shot.json")}', flush=True)
    return result


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (the corpus/record workers)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv if argv is None else argv
    wall0, cpu0 = time.time(), cpu_seconds()
    holder = {}

    def build(config):
        workdir = flags.FLAGS.workdir
        if _use_demo(config):
            holder['demo'] = prepare_demo(config, workdir)
        return build_task(config)

    cli.define_flags()
    config = cli.parse(argv)
    workdir = flags.FLAGS.workdir
    if not workdir:
        cli.config_error("flag 'workdir' is required")
    if config.train.steps != 0:
        # Flags are already parsed: train_main re-parses the same argv with the defined flags.
        summary = _train_main(build, argv)
        params = summary['state'].params
    else:
        cli.setup_logging()
        from trainer.loop import write_config
        task = build(config)
        write_config(config, workdir)
        params = untrained_params(config, task)
        summary = {'final_step': 0}
    if 'demo' in holder and config.demo.zero_shot:
        zero_shot(config, params, holder['demo'], workdir, int(summary['final_step']),
                  wall0, cpu0)
    return summary


def _train_main(build, argv):
    """cli.train_main without re-defining the flags this module has already defined."""
    from trainer import distributed
    from trainer.config import validate_static
    from trainer.errors import ConfigError
    from trainer.loop import train
    config = flags.FLAGS.config
    distributed.initialize(flags.FLAGS.coordinator_address, flags.FLAGS.num_processes,
                           flags.FLAGS.process_id, flags.FLAGS.distributed_timeout,
                           flags.FLAGS.heartbeat_timeout)
    cli.setup_logging()
    try:
        validate_static(config)
        task = build(config)
        return train(config, flags.FLAGS.workdir, task)
    except ConfigError as error:
        cli.config_error(str(error))


if __name__ == '__main__':
    main()
