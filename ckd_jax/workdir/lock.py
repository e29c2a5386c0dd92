"""One run per workdir: an advisory lock that the OS releases when the process dies. In a run of
several processes, process 0 holds it for all of them (it is the one that writes)."""

import contextlib
import fcntl
import os

from ckd_jax.distributed import is_primary
from ckd_jax.workdir import layout


class WorkdirLockedError(RuntimeError):
  """Another live process holds the workdir."""


@contextlib.contextmanager
def workdir_lock(workdir):
  if not is_primary():
    yield
    return
  path = layout.lock_path(workdir)
  path.parent.mkdir(parents=True, exist_ok=True)
  with open(path, 'a+') as handle:
    try:
      fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      handle.seek(0)
      owner = handle.read().strip() or 'unknown'
      raise WorkdirLockedError(
        f'{workdir} is in use by another process (pid {owner}); wait for it to finish or stop it'
      ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    try:
      yield
    finally:
      fcntl.flock(handle, fcntl.LOCK_UN)
