"""Shared pieces of the annotation builders: split files found by name in `manual_dir`."""
from __future__ import annotations

import os

SPLIT_PATTERNS = (('train', 'train'), ('validation', 'val'), ('test', 'test'))


def split_files(manual_dir, prefix: str) -> dict[str, str]:
    """{tfds split: path} of `{prefix}*{train|val|test}*.jsonl` files in manual_dir (at least
    one required; a name matching several splits is an error)."""
    names = sorted(n for n in os.listdir(manual_dir)
                   if n.startswith(prefix) and n.endswith('.jsonl'))
    found: dict[str, str] = {}
    for name in names:
        hits = [split for split, word in SPLIT_PATTERNS if word in name[len(prefix):]]
        if len(hits) > 1:
            raise ValueError(f'{name}: matches several splits {hits}')
        if hits:
            if hits[0] in found:
                raise ValueError(f'two {hits[0]} files: {found[hits[0]]} and {name}')
            found[hits[0]] = os.path.join(manual_dir, name)
    if not found:
        raise FileNotFoundError(f'no {prefix}*train/val/test*.jsonl file in {manual_dir}')
    return found
