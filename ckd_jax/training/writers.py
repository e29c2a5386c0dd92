"""Where the epoch records go: one interface, in the shape of CLU's `metric_writers`.

CLU itself is not used: its `metric_writers` package imports TensorFlow. Every writer takes the same
epoch record (a flat dict of numbers with 'epoch'); `MultiWriter` fans one record out to several.
`metrics.jsonl` (JsonlWriter) is the record the library itself reads back; the others are views.
"""

import abc
import pathlib

from absl import logging

from ckd_jax.workdir.files import append_jsonl, jsonl_text, read_jsonl, write_jsonl


class MetricWriter(abc.ABC):
  @abc.abstractmethod
  def write(self, record):
    """Writes one epoch record."""

  def close(self):
    """Releases files; the default has nothing to release."""


class JsonlWriter(MetricWriter):
  """One JSON line per epoch (metrics.jsonl): easy to read with pandas, and the resume record."""

  def __init__(self, path):
    self.path = path

  def write(self, record):
    append_jsonl(self.path, record)

  def read(self):
    return read_jsonl(self.path)

  def truncate_after(self, epoch):
    """Drops epochs a killed run logged after its last resume checkpoint (they will be redone),
    and a record torn by the kill (appended before the checkpoint of its epoch, so after the last
    one)."""
    kept = [r for r in read_jsonl(self.path, drop_torn_tail=True) if r['epoch'] <= epoch]
    path = pathlib.Path(self.path)
    if path.exists() and path.read_text() != jsonl_text(kept):
      write_jsonl(self.path, kept)


class TensorBoardWriter(MetricWriter):
  """Each record as TensorBoard scalars against the epoch (needs tensorboardX)."""

  def __init__(self, log_dir):
    try:
      from tensorboardX import SummaryWriter
    except ImportError:
      raise ImportError(
        "config.tensorboard=True needs tensorboardX: pip install -e '.[tensorboard]'"
      ) from None
    self._writer = SummaryWriter(str(log_dir))

  def write(self, record):
    for key, value in record.items():
      if key not in ('epoch', 'step'):
        self._writer.add_scalar(key, value, record['epoch'])
    self._writer.flush()

  def close(self):
    self._writer.close()


class LoggingWriter(MetricWriter):
  """The record in the absl log (shown with --verbosity=0)."""

  def __init__(self, description):
    self.description = description

  def write(self, record):
    logging.info('%s epoch %d: %s', self.description, record['epoch'], record)


class MultiWriter(MetricWriter):
  def __init__(self, writers):
    self.writers = list(writers)

  def write(self, record):
    for writer in self.writers:
      writer.write(record)

  def close(self):
    for writer in self.writers:
      writer.close()
