"""MERLOT Reserve pretraining entry point.

    python -m mreserve.train --config configs/mreserve/pretrain.py:variant=tiny --workdir DIR
"""
from mreserve.task import build_task
from trainer import cli


def main():
    cli.train_main(build_task)


if __name__ == '__main__':
    main()
