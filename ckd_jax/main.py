"""Command line: python -m ckd_jax.main --config=configs/quickstart.py --workdir=DIR.

Every field of the config can be overridden, e.g. --config.teacher.epochs=50; --show_config prints
them all (with the overrides applied) and exits.

Several processes (hosts) run one job when started with --coordinator_address, --num_processes and
--process_id, or as the tasks of one SLURM step (launch/slurm.py); each runs this same command.
"""

import errno
import logging as std_logging
import os
import signal
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from ckd_jax import distributed, supervise
from ckd_jax.workdir import WorkdirLockedError, layout

_CONFIG = config_flags.DEFINE_config_file(
  'config',
  None,
  'A configs/*.py file (optionally :key=value,… after it). Override any field '
  'with --config.<field>=value, e.g. --config.teacher.epochs=50, '
  "'--config.teacher.snapshot_epochs=(10,20,50)'; --show_config lists every field.",
  lock_config=True,
)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Where every stage reads and writes.')
_SHOW_CONFIG = flags.DEFINE_bool(
  'show_config', False, 'Print the resolved config (every field, overrides applied) and exit.'
)
_ALLOW_CHANGE = flags.DEFINE_bool(
  'allow_config_change', False, 'Continue in a workdir that a different config wrote.'
)
_COMPILATION_CACHE = flags.DEFINE_string(
  'compilation_cache_dir',
  '',
  'Persistent XLA compilation cache, so that reruns and runs with identical steps (teacher '
  "seeds, students) skip compilation. Default: WORKDIR/xla_cache; 'off' disables it.",
)
_COORDINATOR = flags.DEFINE_string(
  'coordinator_address',
  '',
  'Several processes: HOST:PORT of process 0, which every process '
  'reaches (with --num_processes and --process_id; under SLURM all three come from its '
  'environment).',
)
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', 0, 'Several processes: how many.')
_PROCESS_ID = flags.DEFINE_integer('process_id', -1, 'Several processes: this one (0 writes).')
_DISTRIBUTED_TIMEOUT = flags.DEFINE_integer(
  'distributed_timeout', 300, 'Seconds to wait for the coordinator and the other processes.'
)
_RESUME_AFTER_ABORT = flags.DEFINE_integer(
  'resume_after_abort',
  3,
  'A single-process run computes in a child process; when that dies '
  'of SIGABRT (XLA aborts a process whose collective timed out), it is started again this many '
  'times at most and resumes from its last checkpoint. 0: compute in this process.',
)
flags.mark_flags_as_required(['config'])


def _parse_flags(argv):
  """absl's parsing, with a mistyped --config.<field> as one line instead of a traceback."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    sys.exit(f'error: {e}\nPass --helpfull to see the flags.')
  except (AttributeError, KeyError, TypeError, ValueError) as e:  # raised by config overrides
    overrides = [a.split('=')[0] for a in argv[1:] if a.startswith('--config.')]
    inner = e
    while isinstance(inner, BaseException) and inner.args:  # ml_collections nests the message
      inner = inner.args[0]
    message = ' '.join(str(inner).split())
    sys.exit(
      f'error: bad config override among {overrides}: {message}. --show_config lists the fields.'
    )


def _drop_closed_event_loop_noise(unraisable):
  """After a failed Orbax read or write (a corrupt file, a full disk), TensorStore completes its
  pending futures on an asyncio loop that Orbax already closed, and each one prints a traceback
  ('Event loop is closed') through sys.unraisablehook: dozens of lines that bury the one-line
  error. Those are dropped; every other unraisable exception is shown as usual."""
  if unraisable.exc_type is RuntimeError and str(unraisable.exc_value) == 'Event loop is closed':
    return
  sys.__unraisablehook__(unraisable)


class _OrbaxThreadErrors(std_logging.Filter):
  """Orbax logs a failed write (e.g. a full disk) with a traceback from each of its worker threads,
  then raises it in the main thread, where the checkpoint module turns it into the one-line error
  that the user sees. The thread logs only repeat it, so they are dropped."""

  def filter(self, record):
    return not (record.levelno >= std_logging.ERROR and '/orbax/' in record.pathname)


def _stop_gracefully(signum, frame):
  """SIGTERM (e.g. a cluster preemption) and SIGUSR2 (SLURM's warning before the time limit, as
  launch/ asks for it) save a resume checkpoint, like Ctrl-C."""
  del signum, frame
  raise KeyboardInterrupt


def main(argv):
  if not flags.FLAGS['verbosity'].present:  # Orbax logs every save at INFO; show warnings and up
    logging.set_verbosity(logging.WARNING)
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  if _SHOW_CONFIG.value:
    print(_CONFIG.value)
    return
  if not _WORKDIR.value:
    raise app.UsageError('--workdir is required: the folder where every stage reads and writes')
  single_process = not (
    _COORDINATOR.value or _NUM_PROCESSES.value > 1 or distributed.slurm_num_processes() > 1
  )
  if supervise.is_child():
    supervise.follow_parent()
  elif single_process and _RESUME_AFTER_ABORT.value > 0:
    command = [sys.executable, '-m', 'ckd_jax.main', *sys.argv[1:]]
    sys.exit(supervise.supervise(command, _RESUME_AFTER_ABORT.value))
  # JAX is imported only by the process that computes (a supervisor's start stays quick)
  from ckd_jax import data_parallel, pipeline

  if _CONFIG.value.parallel != 'none':  # a split CPU is slower for one device's work
    data_parallel.use_host_devices(data_parallel.host_device_count(_CONFIG.value.host_devices))
  try:
    processes = distributed.initialize(
      _COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value, _DISTRIBUTED_TIMEOUT.value
    )
    if processes > 1:  # (the coordinator's process count wins over a differing --num_processes)
      distributed.check_same_everywhere(
        {
          '--num_processes': _NUM_PROCESSES.value,
          '--config': _CONFIG.value.to_json(),
          '--workdir': _WORKDIR.value,
        }
      )
  except (ValueError, ConnectionError) as e:
    raise SystemExit(f'error: {e}') from None
  if not distributed.is_primary():  # process 0 speaks for all; the others only say what fails
    sys.stdout = open(os.devnull, 'w')
    logging.set_verbosity(logging.ERROR)
  for stop_signal in (signal.SIGTERM, signal.SIGUSR2):
    signal.signal(stop_signal, _stop_gracefully)
  sys.unraisablehook = _drop_closed_event_loop_noise
  logging.get_absl_logger().addFilter(_OrbaxThreadErrors())
  if _COMPILATION_CACHE.value != 'off':
    import jax

    jax.config.update(
      'jax_compilation_cache_dir',
      _COMPILATION_CACHE.value or str(layout.xla_cache_dir(_WORKDIR.value)),
    )
    jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
  try:
    pipeline.run(_CONFIG.value, _WORKDIR.value, _ALLOW_CHANGE.value)
  except (ValueError, FloatingPointError, WorkdirLockedError) as e:  # a message, not a traceback
    raise SystemExit(f'error: {e}') from None
  except OSError as e:  # a missing file, a read-only workdir, a full disk
    hint = ' (free some space and rerun the same command)' if e.errno == errno.ENOSPC else ''
    raise SystemExit(f'error: {e}{hint}') from None
  except KeyboardInterrupt:
    _exit_now('interrupted: rerun the same command to resume where it stopped')
  print(f'done: results in {_WORKDIR.value}')


def _exit_now(message):
  """Prints `message` and exits with status 1 without finalising the interpreter. An interrupt can
  land while XLA still runs dispatched work on its own threads (e.g. the select stage's program):
  finalising then crashed the process with a segmentation fault after the message (a kill during
  the quick-start's select stage reproduced it). Everything to keep is saved by then (checkpoints
  are written before the interrupt propagates; the workdir lock is released by the OS). Revisit if
  jaxlib's shutdown waits for its in-flight work."""
  print(message, file=sys.stderr)
  sys.stdout.flush()
  sys.stderr.flush()
  os._exit(1)


if __name__ == '__main__':
  app.run(main, flags_parser=_parse_flags)
