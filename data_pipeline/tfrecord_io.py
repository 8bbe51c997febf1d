"""Checked TFRecord reading: a corrupt record is named (file, record number, byte offset) or
skipped and counted.

A TFRecord file is a sequence of ``uint64 length | uint32 masked crc32c(length) | data |
uint32 masked crc32c(data)``. TensorFlow's readers check both checksums, but their errors name a
byte offset and not the file (``tf.data.TFRecordDataset``: "corrupted record at 244"), and
``Dataset.ignore_errors`` drops the rest of the file without saying so. Here TF's own C++
random-access reader (``tf_record_random_reader``: the checksums are verified at C++ speed) reads
one record at a time, so that

- ``read_records(path)`` raises ``CorruptRecordError`` naming the file, the record number and its
  byte offset for a record that fails a checksum or that the file ends inside (a truncated
  shard);
- ``read_records(path, skip_corrupt=True, counter=c)`` skips such a record, counts it in ``c``
  and logs a warning naming it. When the record's stored length leads to a valid next record (a
  bad data checksum) reading goes on from there, so only that record is lost; otherwise (a
  damaged length, a truncated file) nothing after it can be framed and the rest of the file is
  skipped, counted as one;
- ``find_corruption(paths)`` finds the first corrupt record of some files: the readers that use
  ``tf.data.TFRecordDataset`` for speed call it when TF reports a data loss, to name the file.

The records of an undamaged file are exactly those of ``tf.data.TFRecordDataset``, in order.
"""
from __future__ import annotations

import logging
import struct
import threading
from collections.abc import Iterable, Iterator

log = logging.getLogger(__name__)

HEADER_BYTES = 12           # length + its checksum
FOOTER_BYTES = 4            # checksum of the data
SKIP_HINT = ('set data.skip_corrupt=True to skip corrupt records (they are counted in the '
             'metrics as data/corrupt_records_skipped)')
METRIC = 'data/corrupt_records_skipped'


class CorruptRecordError(ValueError):
    """A TFRecord that fails its checksums or is cut short, with where it is."""

    def __init__(self, path: str, index: int, offset: int, reason: str):
        self.path, self.index, self.offset, self.reason = path, index, offset, reason
        super().__init__(f'corrupt TFRecord file {path}: record {index} at byte offset '
                         f'{offset}: {reason}; {SKIP_HINT}')

    def __reduce__(self):
        return type(self), (self.path, self.index, self.offset, self.reason)


class CorruptionCounter:
    """Corrupt records skipped so far (thread-safe: tf.data runs readers on several threads)."""

    def __init__(self):
        self._lock = threading.Lock()
        self.count = 0
        self.last: CorruptRecordError | None = None

    def add(self, error: CorruptRecordError) -> None:
        with self._lock:
            self.count += 1
            self.last = error

    def metrics(self) -> dict[str, float]:
        """For `trainer.task.Task.data_metrics`."""
        return {METRIC: float(self.count)}


def _size(path: str) -> int:
    import tensorflow as tf
    return int(tf.io.gfile.stat(path).length)


def _reason(error: Exception, path: str, offset: int, size: int) -> str:
    if 'truncated' in str(error) or offset + HEADER_BYTES > size:
        return f'truncated: the file ({size} bytes) ends inside this record'
    return f'checksum mismatch ({str(error).strip()})'


def _stored_length(path: str, offset: int) -> int | None:
    import tensorflow as tf
    with tf.io.gfile.GFile(path, 'rb') as f:
        f.seek(offset)
        header = f.read(8)
    return struct.unpack('<Q', header)[0] if len(header) == 8 else None


def _resync(reader, path: str, offset: int, size: int) -> tuple[int, bool]:
    """Where reading can go on after the corrupt record at `offset`, and whether the rest of
    the file is given up: the end of that record if its stored length is plausible and a valid
    record (or exactly the end of the file) follows it, else the end of the file."""
    import tensorflow as tf
    length = _stored_length(path, offset)
    following = size if length is None else offset + HEADER_BYTES + length + FOOTER_BYTES
    if following >= size:
        return size, following != size
    try:
        reader.read(following)
    except (tf.errors.DataLossError, IndexError):
        return size, True
    return following, False


def read_records(path: str, skip_corrupt: bool = False,
                 counter: CorruptionCounter | None = None) -> Iterator[bytes]:
    """The records of one TFRecord file, checked (module docstring)."""
    import tensorflow as tf
    from tensorflow.python.lib.io import tf_record
    size = _size(path)
    reader = tf_record.tf_record_random_reader(path)
    offset = index = 0
    while offset < size:
        try:
            record, following = reader.read(offset)
        except (tf.errors.DataLossError, IndexError) as error:
            corrupt = CorruptRecordError(path, index, offset, _reason(error, path, offset, size))
            if not skip_corrupt:
                raise corrupt from None
            following, rest_lost = _resync(reader, path, offset, size)
            if counter is not None:
                counter.add(corrupt)
            log.warning('skipped %s%s', str(corrupt).split('; ')[0],
                        ' and the rest of the file (nothing after it can be framed)'
                        if rest_lost else '')
            offset, index = following, index + 1
            continue
        yield bytes(record)
        offset, index = following, index + 1


def find_corruption(paths: Iterable[str]) -> CorruptRecordError | None:
    """The first corrupt record in `paths` (read in order, all of each file), or None."""
    for path in paths:
        try:
            for _ in read_records(path):
                pass
        except CorruptRecordError as error:
            return error
    return None
