"""Batches cut from a split that lives whole on the device.

The stream is a pure function of (seed, epoch, step): a permutation per epoch and an augmentation
key per step, so a run resumed mid-epoch sees exactly the batches an uninterrupted run sees. The
augmentation is drawn for the whole global batch, so the data depends neither on the device count
nor on the process count: a process that feeds only some rows (`rows`) cuts just those.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from ckd_jax.data.augment import crop_and_flip, normalize, sample_crop_flip


def steps_per_epoch(num_examples, batch_size):
  """Training drops the incomplete last batch, as torch's DataLoader(drop_last=True) would."""
  steps = num_examples // batch_size
  if steps == 0:
    raise ValueError(f'batch size {batch_size} is larger than the {num_examples} training examples')
  return steps


class TrainStream:
  """What defines the stream of a run: its keys, the permutation of each epoch and the step keys.

  `rows`: the slice of every global batch that this process feeds (`DataParallel.process_rows`);
  None: all of it.
  """

  def __init__(self, num_examples, batch_size, seed, rows=None):
    self.num_examples, self.batch_size = num_examples, batch_size
    self.steps_per_epoch = steps_per_epoch(num_examples, batch_size)
    rows = rows or slice(0, batch_size)
    self.rows = (rows.start, rows.stop)
    self._perm_key, self.aug_key = jax.random.split(jax.random.key(seed))

  def permutation(self, epoch):
    return jax.random.permutation(jax.random.fold_in(self._perm_key, epoch), self.num_examples)

  def step_keys(self, global_step, length):
    return jax.vmap(jax.random.fold_in, (None, 0))(self.aug_key, jnp.arange(length) + global_step)

  def check_block(self, global_step, length):
    step = global_step % self.steps_per_epoch
    if step + length > self.steps_per_epoch:
      raise ValueError(f'a block of {length} steps from step {step} crosses the epoch end')


class TrainBatches:
  """Produces normalised, augmented training batches on the device, from a split held there."""

  def __init__(self, split, batch_size, mean, std, padding, flip, seed, rows=None):
    self.images = jnp.asarray(split.images)
    self.labels = jnp.asarray(split.labels)
    self.stream = TrainStream(len(split), batch_size, seed, rows)
    self.batch_size, self.steps_per_epoch = batch_size, self.stream.steps_per_epoch
    self._epoch, self._perm = None, None
    self._cut, self._cut_block = _compiled_cuts(
      batch_size, self.stream.rows, tuple(mean), tuple(std), padding, flip
    )

  def batch(self, global_step):
    """The batch of `global_step` (0-based over the whole run)."""
    step = self._step_in_epoch(global_step)
    return self._cut(self.images, self.labels, self._perm, step, self.stream.aug_key, global_step)

  def block(self, global_step, length):
    """The batches of `length` steps from `global_step` on, stacked (length, batch, …); equal to
    `batch` of each step. The block stays within one epoch."""
    self.stream.check_block(global_step, length)
    step = self._step_in_epoch(global_step)
    return self._cut_block(
      self.images,
      self.labels,
      self._perm,
      np.arange(length) + step,
      self.stream.aug_key,
      np.arange(length) + global_step,
    )

  def _step_in_epoch(self, global_step):
    """The step within its epoch; draws the epoch's permutation when the epoch changes."""
    epoch, step = divmod(global_step, self.steps_per_epoch)
    if epoch != self._epoch:
      self._epoch = epoch
      self._perm = self.stream.permutation(epoch)
    return step


@functools.lru_cache(maxsize=16)
def _compiled_cuts(batch_size, rows, mean, std, padding, flip):
  """The compiled cuts of one batch and of a block of steps, one pair per distinct settings in a
  process: JAX reuses a trace only for the same function object, so runs with the same data
  handling (seeds, students, a pipeline run again) share them."""
  cut = functools.partial(
    _cut_batch, batch_size=batch_size, rows=rows, mean=mean, std=std, padding=padding, flip=flip
  )
  # The step's key is drawn inside the compiled cut: one dispatch per batch (an eager fold_in
  # would be a second dispatch, as costly as the cut itself on small batches).
  cut_at = lambda images, labels, perm, step, aug_key, global_step: cut(
    images, labels, perm, step, jax.random.fold_in(aug_key, global_step)
  )
  return jax.jit(cut_at), jax.jit(jax.vmap(cut_at, in_axes=(None, None, None, 0, None, 0)))


def _cut_batch(images, labels, perm, step, key, *, batch_size, rows, **augmentation):
  idx = jax.lax.dynamic_slice(perm, (step * batch_size,), (batch_size,))[rows[0] : rows[1]]
  return augment_rows(
    images[idx], labels[idx], key, batch_size=batch_size, rows=rows, **augmentation
  )


def augment_rows(images, labels, key, *, batch_size, rows, mean, std, padding, flip):
  """The `rows` of a global batch of `batch_size`, augmented with the draws of the whole batch
  (so the result does not depend on which process holds which rows), normalised."""
  if padding or flip:
    dy, dx, flips = sample_crop_flip(key, batch_size, padding, flip)
    images = crop_and_flip(
      images, dy[rows[0] : rows[1]], dx[rows[0] : rows[1]], flips[rows[0] : rows[1]], padding
    )
  return {'image': normalize(images, mean, std), 'label': labels}


def eval_batches(split, batch_size, mean, std, rows=None):
  """Every example once, the last batch padded; `mask` marks the real examples. `rows`: the slice
  of every batch to yield (this process's); None: all of it."""
  n = len(split)
  rows = rows or slice(0, batch_size)
  for start in range(0, n, batch_size):
    images = split.images[start : start + batch_size]
    labels = split.labels[start : start + batch_size]
    real = len(labels)
    if real < batch_size:
      images = np.concatenate([images, np.zeros((batch_size - real,) + images.shape[1:], np.uint8)])
      labels = np.concatenate([labels, np.zeros(batch_size - real, np.int32)])
    yield {
      'image': _normalize_jit(images[rows], tuple(mean), tuple(std)),
      'label': jnp.asarray(labels[rows]),
      'mask': (np.arange(batch_size) < real)[rows],
    }


@functools.partial(jax.jit, static_argnums=(1, 2))
def _normalize_jit(images, mean, std):
  return normalize(images, mean, std)
