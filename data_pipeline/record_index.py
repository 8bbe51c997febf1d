"""Random access to TFRecord files: an index of (file, offset, length) per record.

Downstream finetuning draws its examples as a function of (seed, step) (a per-epoch
permutation), so a resumed run sees the batches it would have seen. With an index a host reads
just the records of its rows instead of holding a whole split in memory. Building the index
reads only the 12-byte record headers (no CRC checks; `read` verifies the length).
"""
from __future__ import annotations

import glob
import os
import struct
from collections.abc import Sequence


class RecordIndex:
    def __init__(self, files: Sequence[str]):
        self.files = list(files)
        self.entries: list[tuple[int, int, int]] = []      # (file number, data offset, length)
        for number, path in enumerate(self.files):
            size = os.path.getsize(path)
            with open(path, 'rb') as f:
                offset = 0
                while offset < size:
                    header = f.read(12)
                    if len(header) < 12:
                        raise ValueError(f'{path}: truncated record header at byte {offset}')
                    (length,) = struct.unpack('<Q', header[:8])
                    if offset + 12 + length + 4 > size:
                        raise ValueError(f'{path}: record at byte {offset} runs past the end')
                    self.entries.append((number, offset + 12, length))
                    offset += 12 + length + 4
                    f.seek(offset)

    @classmethod
    def from_pattern(cls, pattern: str) -> RecordIndex:
        files = sorted(glob.glob(pattern))
        if not files:
            raise FileNotFoundError(f'no TFRecord files match {pattern}')
        return cls(files)

    def __len__(self) -> int:
        return len(self.entries)

    def read(self, i: int) -> bytes:
        number, offset, length = self.entries[i]
        with open(self.files[number], 'rb') as f:
            f.seek(offset)
            data = f.read(length)
        if len(data) != length:
            raise ValueError(f'{self.files[number]}: short read of record {i}')
        return data
