"""Fault injection: a shortened quick-start through the command line, with a fault at each stage.

  python benchmarks/faults.py                  # ~15 min on 2 CPU cores; prints a table, writes JSON
  python benchmarks/faults.py --only nan,kill_select

Every fault is met as a user meets it: the CLI is started, the fault is injected (a signal when a
file appears, a flipped byte, a learning rate that diverges, a full disk), and then what the message
asks for is done and the same command is rerun. 'identical' compares the rerun's results.csv and
report.md (wall times and paths removed) with those of an undisturbed run of the same command.
The full-disk case mounts a small tmpfs (root on Linux); elsewhere it is reported as skipped.
"""

import argparse
import csv
import json
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
# The quick-start, shortened: one teacher of 4 epochs, four student choices of 2 epochs.
SHORT = [
  '--config=configs/quickstart.py',
  '--config.progress=False',
  '--config.teacher.num_seeds=1',
  '--config.teacher.epochs=4',
  '--config.teacher.snapshot_epochs=(2,4)',
  '--config.teacher.optimizer.milestones=(3,)',
  '--config.teacher.checkpoint_every_steps=10',
  '--config.distill.epochs=2',
  '--config.distill.optimizer.milestones=(1,)',
  '--config.distill.checkpoint_every_steps=10',
  "--config.distill.teachers=('epoch:2','final','selected','none')",
]


class Run:
  """One CLI invocation on `workdir`, started now; `.wait()` gives (exit code, output)."""

  def __init__(self, workdir, extra=(), cache=None):
    args = [sys.executable, '-m', 'ckd_jax.main', f'--workdir={workdir}', *SHORT, *extra]
    args.append(f'--compilation_cache_dir={cache or "off"}')  # off: nothing extra in workdir
    self.process = subprocess.Popen(
      args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )

  def signal_when(self, condition, signum, timeout=600):
    """Sends `signum` as soon as `condition()` holds (polled); False if the run ended first."""
    start = time.time()
    while self.process.poll() is None and time.time() - start < timeout:
      if condition():
        self.process.send_signal(signum)
        return True
      time.sleep(0.1)
    return False

  def wait(self):
    out, err = self.process.communicate()
    return self.process.returncode, out, err


def run(workdir, extra=(), cache=None):
  return Run(workdir, extra, cache).wait()


def last_line(out, err, code):
  if code == -signal.SIGKILL:
    return '(killed: no output)'
  lines = [l for l in (err.strip().splitlines() or out.strip().splitlines()) if l.strip()]
  return lines[-1][:140] if lines else '(no output)'


def fingerprint(workdir):
  """results.csv and report.md without wall times and paths: equal for equal results."""
  workdir = pathlib.Path(workdir)
  if not (workdir / 'report.md').exists():
    return None
  with open(workdir / 'results.csv') as f:
    rows = [
      {k: v for k, v in r.items() if k not in ('train_time_s', 'run_dir')}
      for r in csv.DictReader(f)
    ]
  report = (workdir / 'report.md').read_text().replace(str(workdir), 'W')
  return rows, re.sub(r'\| [\d.]+ min \|', '| T |', report)


def flip_a_byte(directory):
  """Flips one byte in the middle of every array data file under `directory`."""
  for chunk in pathlib.Path(directory).rglob('d/*'):
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0x01
    chunk.write_bytes(bytes(data))


def teacher_dir(workdir):
  return pathlib.Path(workdir) / 'teachers' / 'resnet20_seed0'


def stage_done(workdir, stage):
  path = pathlib.Path(workdir) / 'manifest.json'
  try:
    return stage in json.loads(path.read_text())['stages']
  except (FileNotFoundError, json.JSONDecodeError, KeyError):
    return False


def exists(pattern):
  return lambda workdir: any(pathlib.Path(workdir).glob(pattern))


# Each fault: (workdir, cache) -> (exit code, what the user saw, reruns[, workdir to compare]).
def signal_then_rerun(condition, signum):
  """A fault that is a signal sent when `condition(workdir)` holds; the fix is to rerun."""

  def fault(w, cache):
    r = Run(w, cache=cache)
    r.signal_when(lambda: condition(w), signum)
    code, out, err = r.wait()
    return code, last_line(out, err, code), [run(w, cache=cache)]

  return fault


fault_kill_teacher = signal_then_rerun(exists('teachers/*/resume/*'), signal.SIGKILL)
fault_sigterm_teacher = signal_then_rerun(exists('teachers/*/snapshots/2'), signal.SIGTERM)
fault_kill_select = signal_then_rerun(lambda w: stage_done(w, 'teacher'), signal.SIGKILL)
fault_sigint_distill = signal_then_rerun(exists('students/*/resume/*'), signal.SIGINT)


def fault_corrupt_snapshot(w, cache):
  run(w, ['--config.stages=teacher'], cache)
  flip_a_byte(teacher_dir(w) / 'snapshots' / '2')
  code, out, err = run(w, cache=cache)
  shutil.rmtree(teacher_dir(w) / 'snapshots' / '2')  # what the message asks for
  return code, last_line(out, err, code), [run(w, cache=cache)]


def fault_corrupt_resume(w, cache):
  r = Run(w, cache=cache)
  r.signal_when(lambda: exists('teachers/*/resume/*')(w), signal.SIGINT)
  r.wait()
  flip_a_byte(teacher_dir(w) / 'resume')
  code, out, err = run(w, cache=cache)
  shutil.rmtree(teacher_dir(w) / 'resume')  # what the message asks for
  return code, last_line(out, err, code), [run(w, cache=cache)]


def fault_nan(w, cache):
  code, out, err = run(w, ['--config.teacher.optimizer.learning_rate=1e4'], cache)
  return code, last_line(out, err, code), None  # a config fault: nothing to rerun


def fault_full_disk(w, cache):
  w.mkdir(parents=True)
  if subprocess.run(
    ['mount', '-t', 'tmpfs', '-o', 'size=3m', 'tmpfs', str(w)], capture_output=True
  ).returncode:
    return None, 'skipped: cannot mount a tmpfs here', None
  try:
    code, out, err = run(w, cache=cache)
    subprocess.run(['mount', '-o', 'remount,size=512m', str(w)], check=True)  # "free some space"
    rerun = run(w, cache=cache)
    kept = pathlib.Path(tempfile.mkdtemp()) / 'full_disk'
    shutil.copytree(w, kept)  # compared after the unmount
  finally:
    subprocess.run(['umount', str(w)], check=False)
  return code, last_line(out, err, code), [rerun], kept


FAULTS = {
  'kill_teacher': ('kill -9 during the teacher stage', fault_kill_teacher),
  'sigterm_teacher': ('SIGTERM during the teacher stage', fault_sigterm_teacher),
  'kill_select': ('kill -9 during the select stage', fault_kill_select),
  'sigint_distill': ('Ctrl-C during the distill stage', fault_sigint_distill),
  'corrupt_snapshot': ('a flipped byte in a teacher snapshot', fault_corrupt_snapshot),
  'corrupt_resume': ('a flipped byte in the resume checkpoint', fault_corrupt_resume),
  'nan': ('divergence (learning rate 1e4)', fault_nan),
  'full_disk': ('full disk (3 MB tmpfs, then enlarged)', fault_full_disk),
}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--only', default=','.join(FAULTS), help='comma-separated fault names')
  parser.add_argument('--out', default=str(ROOT / 'benchmarks' / 'results' / 'faults.json'))
  args = parser.parse_args()
  base = pathlib.Path(tempfile.mkdtemp(prefix='ckd_faults_'))
  cache = base / 'xla_cache'
  print(f'undisturbed run in {base / "reference"} …', flush=True)
  code, _, err = run(base / 'reference', cache=cache)
  if code:
    raise SystemExit(f'the undisturbed run failed:\n{err[-2000:]}')
  reference = fingerprint(base / 'reference')
  rows = []
  for name in args.only.split(','):
    what, inject = FAULTS[name]
    print(f'{what} …', flush=True)
    workdir = base / name
    result = inject(workdir, cache)
    code, seen, reruns = result[:3]
    compared = result[3] if len(result) > 3 else workdir
    if reruns is None:
      identical = '—'
    else:
      identical = 'yes' if reruns[-1][0] == 0 and fingerprint(compared) == reference else 'NO'
    rows.append({'fault': what, 'user saw': seen, 'exit code': code, 'rerun identical': identical})
  widths = [max(len(str(r[k])) for r in rows + [dict(zip(rows[0], rows[0]))]) for k in rows[0]]
  header = list(rows[0])
  print('| ' + ' | '.join(h.ljust(w) for h, w in zip(header, widths)) + ' |')
  print('|' + '|'.join('-' * (w + 2) for w in widths) + '|')
  for r in rows:
    print('| ' + ' | '.join(str(r[h]).ljust(w) for h, w in zip(header, widths)) + ' |')
  out = pathlib.Path(args.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps({'rows': rows, 'workdirs': str(base)}, indent=2))
  print(f'wrote {out}; workdirs kept in {base}')


if __name__ == '__main__':
  main()
