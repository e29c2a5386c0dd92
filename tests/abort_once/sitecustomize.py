"""Imported at start-up by the processes of test_main's abort test (this folder is first on their
PYTHONPATH). In the process that computes (the command line's supervised child), the first save
of a snapshot of epoch 1 is followed by `os.abort()`, as XLA aborts a process: the same SIGABRT
at the same point of every test run, where a signal sent from the test would race the run's end.
A marker file makes it happen once, so the restarted child runs on."""

import os

_MARKER = os.environ.get('CKD_JAX_TEST_ABORT_MARKER')

if _MARKER and os.environ.get('CKD_JAX_SUPERVISED'):
  from ckd_jax.checkpoints import SnapshotStore

  _save = SnapshotStore.save

  def _save_then_abort_once(self, epoch, *args, **kwargs):
    _save(self, epoch, *args, **kwargs)
    if epoch == 1 and not os.path.exists(_MARKER):
      open(_MARKER, 'w').close()
      os.abort()

  SnapshotStore.save = _save_then_abort_once
