"""HERO pretraining entry point.

    python -m hero.train --config configs/hero/pretrain.py:variant=tiny --workdir DIR
    python -m hero.train --config configs/hero/pretrain.py:variant=base --workdir DIR \\
        --config.data.store=STORE

Without `data.store` the run builds (once, cached under `data.demo_dir` or
~/.cache/vidlm/hero_demo) a small feature store from the demo corpus and trains on it; a store
comes from `python -m data_pipeline.hero_features` (own videos) or
`python -m data_pipeline.hero_import` (HERO's released LMDBs).
"""
from hero.task import build_task
from trainer import cli


def main():
    cli.train_main(build_task)


if __name__ == '__main__':
    main()
