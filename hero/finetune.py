"""HERO downstream fine-tuning entry point (TVR, TVQA / How2QA, VIOLIN).

    python -m hero.finetune --config configs/hero/tvr.py:variant=tiny --workdir DIR \
        [--config.init_from=PRETRAINED_PARAMS_DIR]

The task comes from `config.task`. A pretrained `init_from` (export of a HERO pretraining run
or a converted original checkpoint) is first merged into the downstream model's fresh
parameters (hero/load_pretrained.py) and the engine starts from the merged tree.
"""
from absl import flags

from hero.load_pretrained import prepare_init_from
from trainer import cli
from trainer.loop import build_task_from_config


def build_with_pretrained(config):
    task = build_task_from_config(config)
    config.init_from = prepare_init_from(config, flags.FLAGS.workdir,
                                         lambda rng: task.init(rng, None))
    return task


def main():
    cli.train_main(build_with_pretrained)


if __name__ == '__main__':
    main()
