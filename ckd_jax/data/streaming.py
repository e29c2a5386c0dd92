"""Training batches read from image files as they are needed: datasets larger than memory.

The stream is `TrainBatches`' own (`TrainStream`: the same permutation per epoch, the same
augmentation keys), so a streamed run equals an in-memory run of the same folder; only where the
pixels come from differs. grain decodes the files of the next steps in worker threads while the
device trains; each process reads only its rows of every global batch; the batch goes to the device
as uint8 and is augmented and normalised there.
"""

import functools
import threading

import jax
import jax.numpy as jnp
import numpy as np

from ckd_jax.data.batching import TrainBatches, TrainStream, augment_rows
from ckd_jax.data.dataset import FileSplit


class StreamingTrainBatches:
  """`TrainBatches` for a `FileSplit`: the batch of a step is read, `threads` steps ahead, by
  grain; a step other than the next one (a resumed run) restarts the reading there."""

  def __init__(self, split, batch_size, mean, std, padding, flip, seed, rows=None, threads=None):
    import grain  # only streaming needs it

    self._grain, self._split = grain, split
    self._threads = threads or split.threads
    self.stream = TrainStream(len(split), batch_size, seed, rows)
    self.batch_size, self.steps_per_epoch = batch_size, self.stream.steps_per_epoch
    self._perm_lock, self._perms = threading.Lock(), {}
    augment = functools.partial(
      augment_rows,
      batch_size=batch_size,
      rows=self.stream.rows,
      mean=tuple(mean),
      std=tuple(std),
      padding=padding,
      flip=flip,
    )
    self._augment = jax.jit(augment)
    self._augment_block = jax.jit(jax.vmap(augment))
    self._reader, self._next_step = None, None

  def _indices(self, global_step):
    """The example indices of this process's rows of `global_step`'s batch."""
    epoch, step = divmod(global_step, self.steps_per_epoch)
    with self._perm_lock:  # grain's threads read ahead, up to the next epoch
      if epoch not in self._perms:
        self._perms = {e: p for e, p in self._perms.items() if e >= epoch - 1}
        self._perms[epoch] = np.asarray(self.stream.permutation(epoch))
      perm = self._perms[epoch]
    start = step * self.batch_size
    return perm[start + self.stream.rows[0] : start + self.stream.rows[1]]

  def _read(self, global_step):
    indices = self._indices(global_step)
    return self._split.load(indices), self._split.labels[indices]

  def _host_batch(self, global_step):
    if self._next_step != global_step:
      if self._reader is not None:  # its threads would go on reading ahead of the old position
        self._reader.close()
      steps = self._grain.MapDataset.range(global_step, 2**62).map(self._read)
      self._reader = iter(
        steps.to_iter_dataset(
          self._grain.ReadOptions(num_threads=self._threads, prefetch_buffer_size=2 * self._threads)
        )
      )
    self._next_step = global_step + 1
    return next(self._reader)

  def batch(self, global_step):
    images, labels = self._host_batch(global_step)
    key = jax.random.fold_in(self.stream.aug_key, global_step)
    return self._augment(jnp.asarray(images), jnp.asarray(labels), key)

  def block(self, global_step, length):
    self.stream.check_block(global_step, length)
    read = [self._host_batch(global_step + i) for i in range(length)]
    images, labels = (jnp.asarray(np.stack(x)) for x in zip(*read))
    return self._augment_block(images, labels, self.stream.step_keys(global_step, length))


def make_train_batches(split, batch_size, mean, std, padding, flip, seed, rows=None):
  """In-memory `TrainBatches` for a `Split`, streamed ones for a `FileSplit`."""
  cls = StreamingTrainBatches if isinstance(split, FileSplit) else TrainBatches
  return cls(split, batch_size, mean, std, padding, flip, seed, rows)
