"""Command-line front of every training entry point.

    python -m <package>.train --config configs/<pkg>/pretrain.py:variant=tiny --workdir DIR \
        [--config.optim.lr=1e-4 ...] [--coordinator_address HOST:PORT --num_processes N
        --process_id I]

Config mistakes (unknown key, wrong type, impossible combination) exit with status 2 and a
message naming the key, before any compute.
"""
from __future__ import annotations

import logging
import sys
from collections.abc import Callable

from absl import flags
from ml_collections import config_flags

from trainer.errors import ConfigError

CONFIG_ERROR_EXIT = 2


def define_flags(default_config: str | None = None):
    config_flags.DEFINE_config_file('config', default_config, 'config file[:arg]',
                                    lock_config=True)
    flags.DEFINE_string('workdir', None, 'work directory: checkpoints, metrics, config.json')
    flags.DEFINE_string('coordinator_address', '', 'multi-host coordinator HOST:PORT')
    flags.DEFINE_integer('num_processes', 0, 'number of processes (multi-host)')
    flags.DEFINE_integer('process_id', -1, 'this process (multi-host)')
    flags.DEFINE_integer('distributed_timeout', 300, 'seconds to wait for the other processes '
                         'to join at start-up')
    flags.DEFINE_integer('heartbeat_timeout', 100, 'seconds without a heartbeat after which a '
                         'process counts as dead and the others stop with an error')


def config_error(message: str) -> None:
    print(f'config error: {message}', file=sys.stderr)
    sys.exit(CONFIG_ERROR_EXIT)


def parse(argv: list[str]):
    """Parse flags; any flag or config problem exits with status 2 naming what is wrong.

    For the process's own command line (`argv is sys.argv`) the process is then re-executed
    once with trainer/process_env.py's settings (malloc tunables, XLA:CPU options)."""
    try:
        flags.FLAGS(argv)
        config = flags.FLAGS.config
    except flags.Error as error:
        config_error(str(error))
    except (KeyError, ValueError, TypeError, AttributeError, FileNotFoundError) as error:
        config_error(f'{type(error).__name__}: {error}')
    if config is None:
        config_error('--config is required')
    if argv is sys.argv:    # the real command line, not a test's: process settings first
        from trainer import process_env
        process_env.reexec()
    return config


def setup_logging():
    logging.basicConfig(level=logging.INFO, format='%(asctime)s %(levelname)s %(message)s',
                        stream=sys.stdout, force=True)
    for noisy in ('absl', 'jax._src', 'orbax', 'tensorflow'):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def train_main(build_task: Callable, argv: list[str] | None = None,
               default_config: str | None = None) -> dict:
    """Entry point body shared by `python -m mreserve.train`, `python -m hero.train`, ..."""
    define_flags(default_config)
    config = parse(sys.argv if argv is None else argv)
    if not flags.FLAGS.workdir:
        config_error("flag 'workdir' is required")
    from trainer import distributed
    distributed.initialize(flags.FLAGS.coordinator_address, flags.FLAGS.num_processes,
                           flags.FLAGS.process_id, flags.FLAGS.distributed_timeout,
                           flags.FLAGS.heartbeat_timeout)
    setup_logging()
    from trainer.config import validate_static
    from trainer.loop import train
    try:
        validate_static(config)
        task = build_task(config)
        return train(config, flags.FLAGS.workdir, task)
    except ConfigError as error:
        config_error(str(error))
