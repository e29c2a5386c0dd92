"""The command line's supervisor: restarts after SIGABRT only, bounded, signals forwarded once."""

import os
import pathlib
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from ckd_jax import supervise

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _child(tmp_path, body):
  """A child command: Python that counts its starts in tmp_path/starts, then runs `body`."""
  script = tmp_path / 'child.py'
  script.write_text(
    textwrap.dedent(f"""
      import os, pathlib, signal, sys, time
      starts = pathlib.Path({str(tmp_path / 'starts')!r})
      n = int(starts.read_text()) + 1 if starts.exists() else 1
      starts.write_text(str(n))
      assert os.environ[{supervise.CHILD_ENV!r}] == str(os.getppid())
  """)
    + textwrap.dedent(body)
  )
  return [sys.executable, str(script)]


def test_a_child_that_aborts_is_restarted_until_it_succeeds(tmp_path, capfd):
  command = _child(
    tmp_path,
    """
      if n <= 2:
        sys.stderr.write('F rendezvous.cc:161] Termination timeout for `all reduce` exceeded\\n')
        sys.stderr.flush()
        os.abort()
      print('finished')
  """,
  )
  assert supervise.supervise(command, max_restarts=3) == 0
  assert (tmp_path / 'starts').read_text() == '3'
  out, err = capfd.readouterr()
  assert out == 'finished\n'
  assert err.count('Termination timeout') == 2  # the child's own stderr is passed through
  warnings = [line for line in err.splitlines() if line.startswith('warning:')]
  assert warnings == [
    f'warning: the pipeline process died (an XLA collective timed out); resuming from its last '
    f'checkpoint (restart {k} of at most 3)'
    for k in (1, 2)
  ]


def test_restarts_are_bounded_and_the_last_abort_is_reported(tmp_path, capfd):
  command = _child(tmp_path, 'os.abort()\n')
  assert supervise.supervise(command, max_restarts=1) == 128 + signal.SIGABRT
  assert (tmp_path / 'starts').read_text() == '2'
  err = capfd.readouterr().err
  assert err.count('warning:') == 1
  assert (
    err.strip()
    .splitlines()[-1]
    .startswith('error: the pipeline process died 2 times (it was aborted (SIGABRT) the last time)')
  )


@pytest.mark.parametrize(
  'body,status', [('sys.exit(3)\n', 3), ('os.kill(os.getpid(), signal.SIGKILL)\n', 128 + 9)]
)
def test_any_other_end_is_passed_on_without_a_restart(tmp_path, capfd, body, status):
  assert supervise.supervise(_child(tmp_path, body), max_restarts=3) == status
  assert (tmp_path / 'starts').read_text() == '1'
  assert 'warning' not in capfd.readouterr().err


def test_a_signal_to_the_supervisor_reaches_the_child_exactly_once(tmp_path):
  """The child is in a process group of its own: a signal sent to the supervisor's whole group
  (as a terminal's Ctrl-C or `kill -- -PGID` does) is forwarded, not delivered twice."""
  ready, got = tmp_path / 'ready', tmp_path / 'got'
  child = _child(
    tmp_path,
    f"""
      received = []
      signal.signal(signal.SIGTERM, lambda *a: received.append(1))
      pathlib.Path({str(ready)!r}).write_text('')
      deadline = time.time() + 20
      while time.time() < deadline and not received:
        time.sleep(0.05)
      time.sleep(0.5)  # a second delivery would arrive within this
      pathlib.Path({str(got)!r}).write_text(str(len(received)))
      sys.exit(7)
  """,
  )
  runner = (
    f'import sys; sys.path.insert(0, {str(ROOT)!r}); from ckd_jax import supervise; '
    f'sys.exit(supervise.supervise({child!r}, 3))'
  )
  env = {k: v for k, v in os.environ.items() if k != supervise.CHILD_ENV}
  process = subprocess.Popen([sys.executable, '-c', runner], env=env, start_new_session=True)
  deadline = time.time() + 30
  while not ready.exists() and time.time() < deadline:
    time.sleep(0.05)
  os.killpg(process.pid, signal.SIGTERM)  # the supervisor's group: not the child's
  assert process.wait(timeout=30) == 7
  assert got.read_text() == '1'


def test_a_killed_supervisor_takes_its_child_along(tmp_path):
  if not sys.platform.startswith('linux'):
    pytest.skip('the child dies with its parent through prctl, on Linux only')
  pid_file = tmp_path / 'pid'
  child = _child(
    tmp_path,
    f"""
      sys.path.insert(0, {str(ROOT)!r})
      from ckd_jax import supervise
      supervise.follow_parent()  # as the command line's child does first
      pathlib.Path({str(pid_file)!r}).write_text(str(os.getpid()))
      time.sleep(60)
  """,
  )
  runner = (
    f'import sys; sys.path.insert(0, {str(ROOT)!r}); from ckd_jax import supervise; '
    f'sys.exit(supervise.supervise({child!r}, 3))'
  )
  process = subprocess.Popen([sys.executable, '-c', runner])
  deadline = time.time() + 30
  while not pid_file.exists() and time.time() < deadline:
    time.sleep(0.05)
  child_pid = int(pid_file.read_text())
  process.kill()
  process.wait()
  deadline = time.time() + 10
  while time.time() < deadline:
    try:
      os.kill(child_pid, 0)
    except ProcessLookupError:
      return
    time.sleep(0.05)
  pytest.fail('the child outlived its supervisor')
