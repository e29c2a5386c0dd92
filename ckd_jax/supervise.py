"""The command line's guard against a process that aborts: the pipeline runs in a child process,
and when that child dies of SIGABRT it is started again, a bounded number of times, and resumes
from its last checkpoint (every stage resumes; pipeline.py).

SIGABRT is how XLA ends a process it considers inconsistent (e.g. a collective whose participants
did not all arrive: `parallel.CPU_MAX_IN_FLIGHT` removes the cause we measured, this is the net
for the rest); Python code never raises it, so a restart cannot hide an error of ours or the
user's, and a cause that repeats still ends the run after `max_restarts`. Nothing else is
retried: any other exit status is the child's own, passed on unchanged.

The child runs in a process group of its own, so that the signals a terminal, `timeout` or a
cluster sends to this process reach it exactly once (forwarded here); on Linux it asks to be killed
with this process (`follow_parent`, its first act), so a SIGKILL never leaves it running on the
workdir. (Not through subprocess's preexec_fn: that forks a process with JAX's threads, which can
deadlock.)
"""

import ctypes
import os
import signal
import subprocess
import sys

CHILD_ENV = (
  'CKD_JAX_SUPERVISED'  # in the child: the supervisor's pid; it computes, supervises nothing
)
COLLECTIVE_ABORT = 'Termination timeout'  # XLA's words when a collective's participants are late
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR2)
_PR_SET_PDEATHSIG = 1


def is_child():
  return bool(os.environ.get(CHILD_ENV))


def follow_parent():
  """In the child: the kernel sends it SIGKILL when the supervisor dies (Linux; elsewhere a
  killed supervisor leaves the child running). A supervisor that died before this call is seen
  as a changed parent, and the child stops at once."""
  try:
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
  except (OSError, AttributeError):
    return
  if str(os.getppid()) != os.environ.get(CHILD_ENV):
    os._exit(1)


def _run_once(command, env):
  """Runs `command`, its stderr passed through; returns (exit status, whether XLA's collective
  abort message was seen)."""
  child = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, start_new_session=True)
  previous = {
    s: signal.signal(s, lambda signum, frame: child.send_signal(signum)) for s in FORWARDED
  }
  tail, seen = b'', False
  try:
    while True:
      chunk = os.read(child.stderr.fileno(), 65536)
      if not chunk:
        break
      sys.stderr.buffer.write(chunk)
      sys.stderr.buffer.flush()
      tail = (tail + chunk)[-4096:]  # the message may straddle two reads
      seen = seen or COLLECTIVE_ABORT.encode() in tail
    return child.wait(), seen
  finally:
    for s, handler in previous.items():
      signal.signal(s, handler)


def supervise(command, max_restarts, env=None):
  """Runs `command` (the same command line, which then computes) until it ends other than by
  SIGABRT, or has aborted `max_restarts` + 1 times; returns the exit status to leave with."""
  env = dict(os.environ if env is None else env, **{CHILD_ENV: str(os.getpid())})
  restarts = 0
  while True:
    status, collective = _run_once(command, env)
    if status != -signal.SIGABRT:
      return status if status >= 0 else 128 - status
    cause = 'an XLA collective timed out' if collective else 'it was aborted (SIGABRT)'
    if restarts == max_restarts:
      print(
        f'error: the pipeline process died {restarts + 1} times ({cause} the last time); '
        'the workdir keeps everything up to its last checkpoint: rerun the same command to '
        'resume, or set --config.parallel=none to run without collectives',
        file=sys.stderr,
      )
      return 128 + signal.SIGABRT
    restarts += 1
    print(
      f'warning: the pipeline process died ({cause}); resuming from its last checkpoint '
      f'(restart {restarts} of at most {max_restarts})',
      file=sys.stderr,
      flush=True,
    )
