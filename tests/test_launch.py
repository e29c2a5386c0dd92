"""launch/: the local launcher and the sweep (local mode, gather, the SLURM submission rendered)."""

import csv
import json
import os
import pathlib
import subprocess
import sys

import child_env
import pytest

LAUNCH = pathlib.Path(__file__).resolve().parents[1] / 'launch'
sys.path.insert(0, str(LAUNCH))
import slurm  # noqa: E402  (launch/ is scripts, not a package)
import sweep  # noqa: E402

TESTS = pathlib.Path(__file__).resolve().parent
TINY_CONFIG = f"""
import sys
sys.path.insert(0, {str(TESTS)!r})
import pipeline_configs

def get_config():
  return pipeline_configs.tiny_config(train=64, test=32, eval_batch=32, epochs=1,
                                      milestones=(), stages='teacher')
"""


def test_grid_expands_into_one_job_per_point_with_its_overrides(tmp_path):
  jobs = sweep.jobs_of(
    'configs/quickstart.py',
    tmp_path,
    sweep.parse_grid(['seed=0,1', 'distill.alpha=0.5,0.9']),
    ['--config.progress=False'],
  )
  assert [j['name'] for j in jobs] == [
    'seed-0_distill.alpha-0.5',
    'seed-0_distill.alpha-0.9',
    'seed-1_distill.alpha-0.5',
    'seed-1_distill.alpha-0.9',
  ]
  assert jobs[1]['command'][1:] == [
    '-m',
    'ckd_jax.main',
    '--config=configs/quickstart.py',
    f'--workdir={tmp_path / "seed-0_distill.alpha-0.9"}',
    '--config.seed=0',
    '--config.distill.alpha=0.9',
    '--config.progress=False',
  ]
  for bad in (['seed'], ['seed='], ['seed=0', 'seed=1']):
    with pytest.raises(SystemExit):
      sweep.parse_grid(bad)
  with pytest.raises(SystemExit, match='start the sweep first'):
    sweep.gather(tmp_path / 'never_started')


def test_local_sweep_runs_every_job_and_gathers_one_table(tmp_path):
  """A grid of two keys (seed × KD α, as in docs/scaling_out.md; one seed, two α: each job is a
  process of its own, the 2×2 expansion is checked above) of a tiny teacher-only config: α leaves
  a teacher unchanged, so the second job compiles nothing, and the table's two α rows must agree
  (a job depends on its seed alone: determinism across jobs)."""
  config = tmp_path / 'tiny.py'
  config.write_text(TINY_CONFIG)
  root = tmp_path / 'sweep'
  result = subprocess.run(
    [
      sys.executable,
      str(LAUNCH / 'sweep.py'),
      f'--config={config}',
      f'--root={root}',
      '--grid=seed=0',
      '--grid=distill.alpha=0.5,0.9',
      '--local',
      '--',
      '--config.progress=False',
      f'--compilation_cache_dir={child_env.XLA_CACHE}',
    ],
    capture_output=True,
    text=True,
    env=child_env.without_host_devices(),
    cwd=TESTS.parent,
  )
  assert result.returncode == 0, result.stderr[-3000:]
  assert '2 of 2 jobs done' in result.stdout
  assert sweep.main([f'--root={root}', '--gather']) == 0
  rows = list(csv.DictReader(open(root / 'sweep_results.csv')))
  jobs = ['seed-0_distill.alpha-0.5', 'seed-0_distill.alpha-0.9']
  assert [(r['job'], r['kind']) for r in rows] == [(job, 'teacher') for job in jobs]
  accuracy = {}
  for row in rows:
    final = json.loads(next((root / row['job'] / 'teachers').glob('*/final.json')).read_text())
    assert final['last_test_accuracy'] == float(row['last_test_accuracy'])
    accuracy.setdefault(row['distill.alpha'], []).append(final['last_test_accuracy'])
  assert accuracy['0.5'] == accuracy['0.9'] and len(accuracy['0.5']) == 1
  table = (root / 'sweep_report.md').read_text()
  for alpha, [value] in accuracy.items():
    assert f'| {alpha} | teacher | resnet8_b |  | {100 * value:.2f} ± 0.00 | 1 |' in table, table


@pytest.fixture
def fake_srun(tmp_path, monkeypatch):
  """submitit renders sbatch scripts without a cluster once an `srun` is on the PATH."""
  fake_bin = tmp_path / 'bin'
  fake_bin.mkdir()
  (fake_bin / 'srun').write_text('#!/bin/sh\nexit 0\n')
  (fake_bin / 'srun').chmod(0o755)
  monkeypatch.setenv('PATH', f'{fake_bin}{os.pathsep}{os.environ["PATH"]}')


def test_slurm_submission_is_one_array_task_per_job(tmp_path, fake_srun):
  args, _ = sweep.parse_args(
    [
      '--root',
      str(tmp_path),
      '--config=configs/quickstart.py',
      '--grid=seed=0,1,2',
      '--slurm',
      '--partition=gpu',
      '--gpus=2',
      '--hours=1.5',
      '--parallel_jobs=2',
    ]
  )
  executor = sweep.slurm_executor(tmp_path, args)
  text = executor._executor._make_submission_file_text('python -m job', 'uid')
  for line in (
    '#SBATCH --partition=gpu',
    '#SBATCH --gpus-per-node=2',
    '#SBATCH --time=90',
    '#SBATCH --cpus-per-task=8',
  ):
    assert line in text, text
  assert executor._executor.parameters['array_parallelism'] == 2


def test_local_launcher_passes_config_workdir_and_overrides(tmp_path):
  result = subprocess.run(
    [
      str(LAUNCH / 'local.sh'),
      'configs/quickstart.py',
      str(tmp_path),
      '--config.teacher.epochs=3',
      '--show_config',
    ],
    capture_output=True,
    text=True,
    env=child_env.without_host_devices(),
    cwd=TESTS.parent,
  )
  assert result.returncode == 0, result.stderr[-2000:]
  assert 'epochs: 3' in result.stdout
  usage = subprocess.run([str(LAUNCH / 'local.sh')], capture_output=True, text=True)
  assert usage.returncode == 2 and 'usage:' in usage.stderr


def test_slurm_run_is_one_task_per_node_with_all_its_gpus(tmp_path, fake_srun, capsys):
  workdir = tmp_path / 'imagenet'
  assert (
    slurm.main(
      [
        '--config=configs/cifar100.py',
        f'--workdir={workdir}',
        '--nodes=2',
        '--gpus_per_node=8',
        '--partition=gpu',
        '--hours=48',
        '--dry_run',
        '--',
        '--config.teacher.epochs=90',
      ]
    )
    == 0
  )
  script = capsys.readouterr().out
  for line in (
    '#SBATCH --nodes=2',
    '#SBATCH --ntasks-per-node=1',
    '#SBATCH --gpus-per-node=8',
    '#SBATCH --partition=gpu',
    '#SBATCH --time=2880',
    '#SBATCH --job-name=imagenet',
  ):
    assert line in script, script
  assert script.rstrip().endswith(
    f'# every task runs: {sys.executable} -m ckd_jax.main --config=configs/cifar100.py '
    f'--workdir={workdir} --config.teacher.epochs=90'
  )
  with pytest.raises(SystemExit, match='only flags of ckd_jax.main'):
    slurm.main(['--config=c.py', f'--workdir={workdir}', '--', 'stray'])


def test_slurm_tasks_start_jax_distributed_from_their_environment(monkeypatch):
  """What each task of such a job sees: SLURM's task count, so ckd_jax.main starts
  jax.distributed (JAX reads the coordinator and the task's rank from the same environment)."""
  from ckd_jax import distributed

  monkeypatch.delenv('SLURM_STEP_NUM_TASKS', raising=False)
  monkeypatch.setenv('SLURM_NTASKS', '2')
  calls = []
  monkeypatch.setattr('jax.distributed.initialize', lambda *a, **k: calls.append((a, k)))
  monkeypatch.setattr('jax.config.update', lambda *a: None)
  distributed.initialize(timeout_s=7)
  assert calls == [((None, None, None), {'initialization_timeout': 7})]
