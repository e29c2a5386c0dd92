"""Several processes on localhost (CPU collectives through gloo): `python -m ckd_jax.main` started
twice with --coordinator_address/--num_processes/--process_id, 4 host devices each.

The reference is the same config in this process, on its 8 host devices (conftest): the same
global mesh program, so the runs may differ only by the order of the cross-process sums. After
2 teacher epochs and 2 KD epochs (2 steps each) they agree to ~1e-7 relative; the tolerance
(rtol 1e-5) leaves room for that and still fails on any difference in data, sharding or updates.
The config is pipeline_configs' smooth two-stage one (no crop padding, learning rate 0.02), where
a rounding difference does not switch a ReLU or BatchNorm kink; the rows each process cuts of an
augmented batch are checked exactly in test_streaming.py.
"""

import json
import pathlib
import socket
import subprocess
import sys

import child_env
import jax
import numpy as np
import pytest
from pipeline_configs import smooth_two_stage_config

from ckd_jax import distributed, pipeline
from ckd_jax.checkpoints import SnapshotStore
from ckd_jax.data_parallel import DataParallel
from ckd_jax.workdir.layout import student_run_dir, teacher_run_dir

TESTS = pathlib.Path(__file__).parent
ROOT = TESTS.parent

CONFIG_FILE = f"""
import sys
sys.path.insert(0, {str(TESTS)!r})
from pipeline_configs import smooth_two_stage_config


def get_config():
  return smooth_two_stage_config()
"""


def _free_port():
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def _launch(tmp_path, workdirs, extra=(), num_processes=(2, 2), timeout=240):
  """Starts the processes of one job; returns [(exit code, output)] by process id."""
  config = tmp_path / 'two_process_config.py'
  config.write_text(CONFIG_FILE)
  env = child_env.without_host_devices()  # host_devices decides
  env['JAX_PLATFORMS'] = 'cpu'
  address = f'localhost:{_free_port()}'
  procs = [
    subprocess.Popen(
      [
        sys.executable,
        '-m',
        'ckd_jax.main',
        f'--config={config}',
        f'--workdir={workdir}',
        '--config.host_devices=4',
        f'--coordinator_address={address}',
        f'--num_processes={count}',
        f'--process_id={pid}',
        '--distributed_timeout=60',
        f'--compilation_cache_dir={child_env.XLA_CACHE}',
        *extra,
      ],
      cwd=ROOT,
      env=env,
      stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT,
      text=True,
    )
    for pid, (workdir, count) in enumerate(zip(workdirs, num_processes))
  ]
  try:
    return [(p.wait(timeout), p.stdout.read()) for p in procs]
  finally:
    for p in procs:
      p.kill()


def _records(run_dir):
  return [json.loads(line) for line in (run_dir / 'metrics.jsonl').read_text().splitlines()]


@pytest.fixture(scope='module')
def two_and_one_process_runs(tmp_path_factory):
  tmp = tmp_path_factory.mktemp('distributed')
  runs = _launch(tmp, [tmp / 'two'] * 2)
  for rc, output in runs:
    assert rc == 0, output[-3000:]
  config = smooth_two_stage_config()
  pipeline.run(config, str(tmp / 'one'))
  return config, tmp / 'two', tmp / 'one', runs


def test_two_processes_train_teacher_and_student_as_one_process(two_and_one_process_runs):
  config, two, one, _ = two_and_one_process_runs
  runs = [(teacher_run_dir(w, 'resnet8_b', 0), 'teacher') for w in (two, one)]
  runs += [(student_run_dir(w, 'resnet8_b', 'final', 0), 'student') for w in (two, one)]
  for (a, what), (b, _) in zip(runs[::2], runs[1::2]):
    ra, rb = _records(a), _records(b)
    assert [r['epoch'] for r in ra] == [1, 2] == [r['epoch'] for r in rb], what
    for key in ('train_loss', 'train_accuracy', 'test_loss', 'test_accuracy'):
      np.testing.assert_allclose(
        [r[key] for r in ra], [r[key] for r in rb], rtol=1e-5, err_msg=f'{what} {key}'
      )
  snap_two, meta_two = SnapshotStore(teacher_run_dir(two, 'resnet8_b', 0)).restore(2)
  snap_one, _ = SnapshotStore(teacher_run_dir(one, 'resnet8_b', 0)).restore(2)
  for x, y in zip(*(map(np.asarray, jax.tree.leaves(t)) for t in (snap_two, snap_one))):
    np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)
  assert meta_two['epoch'] == 2


def test_only_process_zero_speaks(two_and_one_process_runs):
  *_, runs = two_and_one_process_runs
  (_, first), (_, second) = runs
  assert 'done: results in' in first and 'teacher choice' in first
  assert 'done: results in' not in second and 'teacher choice' not in second


def test_processes_started_differently_all_stop_with_one_line(tmp_path):
  runs = _launch(tmp_path, [tmp_path / 'w', tmp_path / 'w'], num_processes=(2, 3), timeout=120)
  for rc, output in runs:
    assert rc == 1, output[-2000:]
    assert 'error: process(es) [1] were started with another --num_processes than process 0' in (
      output
    ), output[-2000:]
  assert not (tmp_path / 'w' / 'config.json').exists()


def test_with_several_processes_only_the_mesh_spans_them_and_the_batch_splits_over_all(monkeypatch):
  """This process's 8 devices as if they were 2 processes' 4 (the checks read only the counts)."""
  monkeypatch.setattr(jax, 'process_count', lambda: 2)
  monkeypatch.setattr(jax, 'local_device_count', lambda: 4)
  parallel = DataParallel('auto')
  assert parallel.mode == 'mesh' and parallel.num_devices == 8
  assert parallel.process_rows(64) == slice(0, 32)
  with pytest.raises(
    ValueError,
    match='teacher.batch_size 36 is not divisible by the 8 devices '
    "over 2 processes of parallel='mesh': change it$",
  ):
    parallel.check_batch_size(36, 'teacher.batch_size')
  for mode in ('pmap', 'none'):
    with pytest.raises(ValueError, match=f"parallel='{mode}' runs on one process's devices"):
      DataParallel(mode)
  monkeypatch.setattr(jax, 'local_device_count', lambda: 3)  # 3 here, 5 on the other
  with pytest.raises(ValueError, match='as many on each: this process has 3 of 8'):
    DataParallel('mesh')


def test_unreachable_coordinator_is_a_bounded_wait_and_a_clear_error():
  """(JAX itself would abort the process, with no Python exception, after its own timeout.)"""
  with pytest.raises(
    ConnectionError,
    match='the coordinator localhost:.* cannot be reached after 1 s .*start process 0',
  ):
    distributed.initialize(f'localhost:{_free_port()}', 2, 1, timeout_s=1)


@pytest.mark.parametrize(
  'flags, message',
  [
    (('localhost:1', 0, -1), 'go together'),
    (('localhost:1', 2, 2), 'outside 0..1'),
  ],
)
def test_bad_process_flags(flags, message):
  with pytest.raises(ValueError, match=message):
    distributed.initialize(*flags)


def test_slurm_task_count(monkeypatch):
  for name in ('SLURM_STEP_NUM_TASKS', 'SLURM_NTASKS'):
    monkeypatch.delenv(name, raising=False)
  assert distributed.slurm_num_processes() == 1
  assert distributed.initialize() == 1  # nothing to start: one process, outside SLURM
  monkeypatch.setenv('SLURM_NTASKS', '4')
  assert distributed.slurm_num_processes() == 4
  monkeypatch.setenv('SLURM_STEP_NUM_TASKS', '2')  # the step's own count wins over the job's
  assert distributed.slurm_num_processes() == 2


def test_importing_the_library_and_its_configs_starts_no_jax_backend():
  """jax.distributed must start before JAX makes its devices: a module-level jnp constant (once in
  mi/binning.py) starts them at import, and every multi-process run then fails."""
  script = (
    'import importlib.util, pathlib, jax\n'
    'import ckd_jax.main, ckd_jax.pipeline\n'
    "for path in sorted(pathlib.Path('configs').glob('[!_]*.py')):\n"
    '  spec = importlib.util.spec_from_file_location(path.stem, path)\n'
    '  module = importlib.util.module_from_spec(spec)\n'
    '  spec.loader.exec_module(module)\n'
    '  module.get_config()\n'
    "jax.config.update('jax_num_cpu_devices', 3)  # raises once the backends exist\n"
    'print(jax.device_count())\n'
  )
  env = child_env.without_host_devices()
  result = subprocess.run(
    [sys.executable, '-c', script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
  )
  assert result.returncode == 0 and result.stdout.strip() == '3', result.stderr[-2000:]
