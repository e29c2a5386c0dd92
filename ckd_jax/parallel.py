"""Data parallelism: one object hides whether steps run jitted on one device or pmapped on all.

pmap is the "old way" of data parallelism in JAX but it is exact, simple and works on fake CPU
devices; the step functions are written once with an optional `axis_name`.
"""
import jax
import numpy as np

AXIS_NAME = 'batch'
MODES = ('none', 'pmap')


class DataParallel:
  def __init__(self, mode='none', num_devices=None):
    if mode not in MODES:
      raise ValueError(f'Unknown parallel mode {mode!r}; choose one of {MODES}')
    self.mode = mode
    self.num_devices = (num_devices or jax.local_device_count()) if mode == 'pmap' else 1
    if self.num_devices > jax.local_device_count():
      raise ValueError(f'{self.num_devices} devices requested, {jax.local_device_count()} present')
    self.devices = jax.local_devices()[:self.num_devices]

  @property
  def axis_name(self):
    return AXIS_NAME if self.mode == 'pmap' else None

  def check_batch_size(self, batch_size, what='batch size'):
    if batch_size % self.num_devices:
      raise ValueError(f'{what} {batch_size} is not divisible by the {self.num_devices} devices')

  def compile(self, step, donate_state=False):
    donate = (0,) if donate_state else ()
    if self.mode == 'pmap':
      return jax.pmap(step, axis_name=AXIS_NAME, devices=self.devices, donate_argnums=donate)
    return jax.jit(step, donate_argnums=donate)

  def replicate(self, tree):
    if self.mode == 'none':
      return tree
    def stack(x):
      x = np.asarray(x)
      return np.broadcast_to(x, (self.num_devices,) + x.shape)
    return jax.tree.map(stack, tree)

  def unreplicate(self, tree):
    """The first device's copy, as host arrays. Not `x[0]`: that launches a gather on device 0,
    and on the CPU runtime with 8 host devices it intermittently aborted the process (2 of ~8
    test-suite runs) when issued right after a pmapped step; reading the ready shard is no op."""
    if self.mode == 'none':
      return tree

    def first(x):
      return np.asarray(x.addressable_data(0) if isinstance(x, jax.Array) else x)[0]
    return jax.tree.map(first, jax.block_until_ready(tree))

  def shard(self, batch):
    """Splits the leading (global batch) axis into (devices, per-device batch)."""
    if self.mode == 'none':
      return batch
    return jax.tree.map(lambda x: x.reshape((self.num_devices, -1) + x.shape[1:]), batch)
