"""Data parallelism: one object hides whether steps run on one device, pmapped, or as one jitted
program sharded over a mesh of devices.

- 'mesh': `jit` over a 1-D device mesh, the batch split along it and the state replicated. XLA
  partitions the program and inserts the reductions itself, so the step is the single-device step
  (gradients, metrics and BatchNorm statistics over the global batch) with nothing in the step
  functions or models; on the CPU it is what makes all cores work (see `use_host_devices`).
- 'pmap': the "old way": exact too, needs `axis_name` in the steps and models (synchronised BN).
- 'none': jit on one device.
- 'auto': 'mesh' when there is more than one local device, else 'none'.
"""

import collections
import os

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

AXIS_NAME = 'batch'
MODES = ('auto', 'none', 'pmap', 'mesh')
_HOST_DEVICE_FLAG = '--xla_force_host_platform_device_count'
# XLA's CPU client lets the host run a bounded number of programs per device ahead of the devices
# (a per-device semaphore). On a CPU split into host devices, a multi-device program whose launch on
# one device waited on that semaphore, while its shards on the other devices already held the
# intra-op threads in an all-reduce, never completed, and XLA aborted the process at its collective
# timeout. With the host kept this many calls ahead, the semaphore never fills. Evidence and rates:
# benchmarks/mesh_stress.py, benchmarks/RESULTS.md (2026-12-01). Revisit when jaxlib's CPU client
# changes: rerun the stress benchmark with setting `unbounded`.
CPU_MAX_IN_FLIGHT = 4


def use_host_devices(count):
  """Splits the CPU into `count` host devices (0: leave JAX's default of one), before JAX starts.

  A training step on one XLA CPU device leaves cores idle: the same batch split over several host
  devices runs faster (benchmarks/RESULTS.md, `benchmarks/run.py`). Returns the count in effect, or
  None when it was not ours to set: an explicit XLA_FLAGS count wins, and once JAX has run
  anything its devices are fixed.
  """
  if not count or _HOST_DEVICE_FLAG in os.environ.get('XLA_FLAGS', ''):
    return None
  try:
    jax.config.update('jax_num_cpu_devices', count)
  except RuntimeError:  # the backends already exist
    return None
  return count


def host_device_count(setting):
  """config.host_devices: a count, or 0 for the default of two per core, at most 8 (the fastest
  split for 32×32 images in benchmarks/RESULTS.md; revisit on machines with many cores)."""
  if setting < 0:
    raise ValueError(f'host_devices must be >= 0 (0: two per core), got {setting}')
  return setting or min(8, 2 * (os.cpu_count() or 1))


class DataParallel:
  """`num_devices` counts the devices of every process: with several processes (`distributed`),
  only 'mesh' spans them, and each process feeds its own rows of every global batch
  (`process_rows`)."""

  def __init__(self, mode='auto', num_devices=None, max_in_flight=None):
    """`max_in_flight`: how many calls of the compiled functions may run ahead of the devices
    (None: CPU_MAX_IN_FLIGHT on a CPU split into several devices, else unbounded; 0: unbounded)."""
    if mode not in MODES:
      raise ValueError(f'Unknown parallel mode {mode!r}; choose one of {MODES}')
    processes = jax.process_count()
    if mode == 'auto':
      mode = 'mesh' if (num_devices or jax.device_count()) > 1 else 'none'
    if processes > 1 and mode != 'mesh':
      raise ValueError(
        f"parallel={mode!r} runs on one process's devices, and this run has "
        f"{processes} processes: use parallel='mesh' (or 'auto')"
      )
    self.mode = mode
    self.num_devices = (num_devices or jax.device_count()) if mode != 'none' else 1
    if self.num_devices > jax.device_count():
      raise ValueError(f'{self.num_devices} devices requested, {jax.device_count()} present')
    if processes > 1 and (
      self.num_devices != jax.device_count()
      or jax.local_device_count() * processes != jax.device_count()
    ):
      raise ValueError(
        f'a run of several processes uses all of their devices, as many on each: '
        f'this process has {jax.local_device_count()} of {jax.device_count()}'
      )
    # process by process, so that each process's devices hold one contiguous block of the batch
    self.devices = sorted(jax.devices(), key=lambda d: (d.process_index, d.id))[: self.num_devices]
    self.num_processes, self.process_index = processes, jax.process_index()
    if mode == 'mesh':
      self._mesh = jax.sharding.Mesh(np.asarray(self.devices), (AXIS_NAME,))
      self._replicated = NamedSharding(self._mesh, PartitionSpec())
    if max_in_flight is None:
      several_cpus = self.num_devices > 1 and self.devices[0].platform == 'cpu'
      max_in_flight = CPU_MAX_IN_FLIGHT if several_cpus else 0
    self._in_flight = _InFlight(max_in_flight) if max_in_flight else None

  @property
  def axis_name(self):
    """The collective axis the steps and BatchNorm must reduce over (only pmap needs one)."""
    return AXIS_NAME if self.mode == 'pmap' else None

  def check_batch_size(self, batch_size, what='batch size'):
    if batch_size % self.num_devices:
      where = f' over {self.num_processes} processes' if self.num_processes > 1 else ''
      fix = 'change it' + ('' if self.num_processes > 1 else ', or set --config.parallel=none')
      raise ValueError(
        f'{what} {batch_size} is not divisible by the {self.num_devices} devices'
        f'{where} of parallel={self.mode!r}: {fix}'
      )

  def process_rows(self, batch_size):
    """The rows of a global batch that this process feeds (all of them with one process)."""
    rows = batch_size // self.num_processes
    return slice(self.process_index * rows, (self.process_index + 1) * rows)

  def compile(self, step, donate_state=False, compiler_options=None):
    """`compiler_options`: XLA options (jit modes; pmap ignores them)."""
    donate = (0,) if donate_state else ()
    if self.mode == 'pmap':
      compiled = jax.pmap(step, axis_name=AXIS_NAME, devices=self.devices, donate_argnums=donate)
    elif self.mode == 'mesh':  # every output (state, metrics, sums) replicated
      compiled = jax.jit(
        step,
        donate_argnums=donate,
        out_shardings=self._replicated,
        compiler_options=compiler_options,
      )
    else:
      compiled = jax.jit(step, donate_argnums=donate, compiler_options=compiler_options)
    return self._paced(compiled)

  def compile_batch_fn(self, fn):
    """A function from a sharded batch (and replicated inputs) to a batch, e.g. the teachers'
    targets: its output stays sharded like the batch (under a mesh XLA propagates the input's
    sharding), where `compile` replicates every output."""
    if self.mode == 'pmap':
      return self._paced(jax.pmap(fn, axis_name=AXIS_NAME, devices=self.devices))
    return self._paced(jax.jit(fn))

  def _paced(self, compiled):
    return compiled if self._in_flight is None else _Paced(compiled, self._in_flight)

  def replicate(self, tree):
    if self.mode == 'none':
      return tree
    if self.mode == 'mesh':  # through the host: device_put would reuse the caller's device-0
      # buffer (even with may_alias=False), and donating the copy would delete the caller's array
      return jax.device_put(jax.tree.map(np.asarray, tree), self._replicated)

    def stack(x):
      x = np.asarray(x)
      return np.broadcast_to(x, (self.num_devices,) + x.shape)

    return jax.tree.map(stack, tree)

  def unreplicate(self, tree):
    """One copy, as host arrays. Under pmap not `x[0]`: that launches a gather on device 0, and on
    the CPU runtime with 8 host devices it intermittently aborted the process (2 of ~8 test-suite
    runs) when issued right after a pmapped step; reading the ready shard is no device op."""
    if self.mode == 'none':
      return tree
    index = 0 if self.mode == 'pmap' else ()

    def first(x):
      return np.array(x.addressable_data(0) if isinstance(x, jax.Array) else x)[index]

    return jax.tree.map(first, jax.block_until_ready(tree))

  def shard(self, batch, batch_axis=0):
    """Splits the global-batch axis (`batch_axis`; the axes before it, e.g. stacked runs or steps,
    stay whole on every device) over the devices; under pmap the device axis comes first.

    With several processes, `batch` holds this process's rows only (`process_rows`), and the
    result is the global batch that the processes' rows make together.
    """
    if self.mode == 'mesh':
      sharding = NamedSharding(self._mesh, PartitionSpec(*([None] * batch_axis), AXIS_NAME))
      if self.num_processes == 1:
        return jax.device_put(batch, sharding)
      return jax.tree.map(lambda x: self._global_array(x, batch_axis, sharding), batch)
    if self.mode == 'pmap':

      def split(x):
        x = x.reshape(x.shape[:batch_axis] + (self.num_devices, -1) + x.shape[batch_axis + 1 :])
        return jnp.moveaxis(x, batch_axis, 0)

      return jax.tree.map(split, batch)
    return batch

  def _global_array(self, rows, batch_axis, sharding):
    """This process's rows, one block per local device (no trip through the host), joined with
    the other processes' rows into one global array."""
    local = [d for d in self.devices if d.process_index == self.process_index]
    pieces = jnp.split(rows, len(local), axis=batch_axis)
    global_shape = list(rows.shape)
    global_shape[batch_axis] *= self.num_processes
    return jax.make_array_from_single_device_arrays(
      tuple(global_shape), sharding, [jax.device_put(p, d) for p, d in zip(pieces, local)]
    )


class _InFlight:
  """The outputs of the last calls; adding one more than `limit` waits for the oldest."""

  def __init__(self, limit):
    self.limit, self._outputs = limit, collections.deque()

  def add(self, output):
    # the last leaf: steps return (state, metrics), and the state is donated to the next call
    leaves = [x for x in jax.tree.leaves(output) if isinstance(x, jax.Array)]
    if leaves:
      self._outputs.append(leaves[-1])
    while len(self._outputs) > self.limit:
      oldest = self._outputs.popleft()
      if not oldest.is_deleted():  # a donated output was consumed by a later call
        oldest.block_until_ready()


class _Paced:
  """A compiled function whose calls keep the host at most `in_flight.limit` calls ahead of the
  devices (CPU_MAX_IN_FLIGHT says why); everything else (`lower`, …) is the function's own."""

  def __init__(self, compiled, in_flight):
    self._compiled, self._in_flight = compiled, in_flight

  def __call__(self, *args, **kwargs):
    output = self._compiled(*args, **kwargs)
    self._in_flight.add(output)
    return output

  def __getattr__(self, name):
    return getattr(self._compiled, name)
