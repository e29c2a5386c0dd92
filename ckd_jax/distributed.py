"""Several processes (e.g. one per host) running one program, on JAX's own runtime.

`jax.distributed` is started from explicit flags or from SLURM's environment. Every process then
runs the same code on the same workdir (a filesystem all of them see), so their control flow stays
identical; the global device mesh of `parallel.DataParallel` spans them all. Only process 0 writes
files (`primary_only`), and `sync` holds the others until what it wrote can be read.

JAX is imported only where a function needs it: the workdir's writers use `primary_only`, and the
report stage, which goes through them, must stay importable without JAX.
"""

import functools
import hashlib
import os
import socket
import sys
import time


def slurm_num_processes():
  """The task count of the SLURM step this process belongs to (1 outside SLURM)."""
  return int(os.environ.get('SLURM_STEP_NUM_TASKS') or os.environ.get('SLURM_NTASKS') or 1)


def _wait_for_coordinator(address, timeout_s):
  """JAX aborts the whole process (no Python exception) when the coordinator cannot be reached;
  this waits for its port first, with a bounded wait and a message that says what to check."""
  host, _, port = address.rpartition(':')
  deadline = time.monotonic() + timeout_s
  while True:
    try:
      socket.create_connection((host, int(port)), timeout=2).close()
      return
    except OSError as e:
      if time.monotonic() > deadline:
        raise ConnectionError(
          f'the coordinator {address} cannot be reached after {timeout_s} s ({e}): start process '
          '0 with the same --coordinator_address, check the host name and that the port is '
          'open, or raise --distributed_timeout'
        ) from None
      time.sleep(0.5)


def initialize(coordinator_address='', num_processes=0, process_id=-1, timeout_s=300):
  """Starts `jax.distributed` before JAX makes its devices; returns the process count.

  Explicit flags (all three) win; otherwise a SLURM step with several tasks is detected from its
  environment by JAX itself; otherwise this is a single process and nothing starts.
  """
  explicit = (coordinator_address, num_processes, process_id >= 0)
  if any(explicit) and not all(explicit):
    raise ValueError(
      '--coordinator_address, --num_processes and --process_id go together: give '
      'all three (or none, to take them from SLURM)'
    )
  if not any(explicit) and slurm_num_processes() <= 1:
    return 1
  if num_processes and not 0 <= process_id < num_processes:
    raise ValueError(
      f'--process_id={process_id} is outside 0..{num_processes - 1} '
      f'(--num_processes={num_processes})'
    )
  if num_processes == 1:
    return 1
  if coordinator_address and process_id > 0:
    _wait_for_coordinator(coordinator_address, timeout_s)
  import jax

  # CPU hosts exchange their collectives through gloo (a no-op setting on GPUs).
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  jax.distributed.initialize(
    coordinator_address or None,
    num_processes or None,
    None if process_id < 0 else process_id,
    initialization_timeout=timeout_s,
  )
  return jax.process_count()


def check_same_everywhere(settings):
  """Raises, on every process alike, when some process was started with settings (a dict of
  name -> text, e.g. the config) other than process 0's: one process failing alone would leave
  the others waiting for it in their first collective."""
  import jax
  import numpy as np
  from jax.experimental import multihost_utils

  if jax.process_count() == 1:
    return
  mine = np.stack(
    [np.frombuffer(hashlib.sha256(str(v).encode()).digest(), np.uint8) for v in settings.values()]
  )
  primary = np.asarray(multihost_utils.broadcast_one_to_all(mine))
  same = np.asarray(multihost_utils.process_allgather(np.all(mine == primary, axis=1)))
  if not same.all():
    names = [name for name, ok in zip(settings, same.all(axis=0)) if not ok]
    processes = [int(i) for i in np.flatnonzero(~same.all(axis=1))]
    raise ValueError(
      f'process(es) {processes} were started with another {" and ".join(names)} '
      'than process 0: start every process with the same command line (but its '
      '--process_id)'
    )


def is_primary():
  """Process 0, or the only process (a program that never imported JAX has no others)."""
  jax = sys.modules.get('jax')
  return jax is None or jax.process_index() == 0


def primary_only(write):
  """Decorates a function that writes files: it runs on process 0 only (None elsewhere)."""

  @functools.wraps(write)
  def wrapped(*args, **kwargs):
    return write(*args, **kwargs) if is_primary() else None

  return wrapped


def sync(name):
  """Waits until every process reaches `name` (nothing to wait for with one process)."""
  jax = sys.modules.get('jax')
  if jax is not None and jax.process_count() > 1:
    from jax.experimental import multihost_utils

    multihost_utils.sync_global_devices(name)
