"""HERO pretraining entry point.

    python -m hero.train --config configs/hero/pretrain.py:variant=tiny --workdir DIR
"""
from hero.task import build_task
from trainer import cli


def main():
    cli.train_main(build_task)


if __name__ == '__main__':
    main()
