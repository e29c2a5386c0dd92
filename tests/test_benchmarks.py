"""The benchmarks in CPU size, so that they cannot rot (their numbers are not asserted: speed is
measured in benchmarks/, never in unit tests)."""

import json
import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / 'benchmarks'))
import run as benchmark_run  # noqa: E402  (benchmarks/ is not a package)

TINY = [
  '--models',
  'resnet8',
  '--kd_pairs',
  'resnet8-resnet8',
  '--batch',
  '16',
  '--image',
  '8',
  '--classes',
  '10',
  '--steps',
  '1',
  '--warmup',
  '1',
]


def test_the_jax_worker_measures_every_mode_on_a_mesh(capsys):
  benchmark_run.main(['--worker', '--parallel', 'auto', '--modes', 'teacher,kd3'] + TINY)
  rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
  assert [(r['model'], r['teacher'], r['mode']) for r in rows] == [
    ('resnet8', '', 'teacher'),
    ('resnet8', 'resnet8', 'kd3'),
  ]
  for row in rows:
    assert row['parallel'] == 'mesh x8' and row['batch'] == 16
    assert row['images_per_s'] == pytest.approx(16 / (row['ms_per_step'] / 1000))
    assert row['compile_s'] > 0 and row['peak_mib'] > 0
  benchmark_run.print_table(rows)
  table = capsys.readouterr().out.splitlines()
  assert table[0].startswith('| framework | model |') and len(table) == 4


def test_the_jax_worker_measures_vectorised_runs(capsys):
  benchmark_run.main(['--worker', '--parallel', 'none', '--modes', 'kd1', '--runs', '3'] + TINY)
  [row] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
  assert row['runs'] == 3 and row['parallel'] == 'none x1'
  assert row['images_per_s'] == pytest.approx(3 * 16 / (row['ms_per_step'] / 1000))


def test_the_torch_reference_has_the_same_models():
  """Equal parameter counts: the PyTorch reference times the same architectures."""
  torch_reference = pytest.importorskip('torch_reference')  # needs torch (benchmarks only)
  from ckd_jax.models import get_model
  from ckd_jax.training import count_params

  for name in ('resnet8', 'resnet20', 'resnet32_b', 'wrn_16_2', 'wrn_40_2', 'wrn_40_1'):
    torch_count = sum(p.numel() for p in torch_reference.get_model(name, 100).parameters())
    assert torch_count == count_params(get_model(name, 100), (32, 32, 3)), name


def test_the_conv_gradient_benchmark_times_both_rules(tmp_path, capsys):
  import conv_grads  # noqa: E402  (benchmarks/ is not a package)

  rows = conv_grads.main(
    [
      '--shapes',
      '2x6x3',
      '--loop',
      '2',
      '--repeats',
      '1',
      '--depthwise',
      '--out',
      str(tmp_path / 'conv.json'),
    ]
  )
  assert [(r['gradient'], r['where']) for r in rows] == [
    ('lax', 'alone'),
    ('lax', 'loop'),
    ('ckd_jax', 'alone'),
    ('ckd_jax', 'loop'),
  ]
  for row in rows:
    assert all(row[k] > 0 for k in ('fwd', 'd_images', 'd_kernel', 'fwd+bwd'))
  assert json.loads((tmp_path / 'conv.json').read_text())['rows'] == rows
  assert capsys.readouterr().out.count('\n| jax |') == 4


def _requirement_names():
  """The names in setup.py's install_requires, read from its syntax tree."""
  import ast
  import re

  tree = ast.parse((pathlib.Path(__file__).resolve().parents[1] / 'setup.py').read_text())
  [requires] = [
    k.value
    for node in ast.walk(tree)
    if isinstance(node, ast.Call)
    for k in node.keywords
    if k.arg == 'install_requires'
  ]
  return {
    re.match(r'[A-Za-z0-9_.-]+', ast.literal_eval(r)).group(0).lower().replace('_', '-')
    for r in requires.elts
  }


def test_the_gpu_wheel_list_covers_every_requirement():
  """Every requirement of setup.py is either on the GPU image, carried as a wheel, or on a path
  the GPU check does not take; nothing is listed twice."""
  import subprocess

  script = pathlib.Path(__file__).resolve().parents[1] / 'benchmarks' / 'gpu_wheels.sh'
  out = subprocess.run(
    ['bash', str(script), '--list'], capture_output=True, text=True, check=True
  ).stdout
  lists = {line.split(':')[0]: line.split(':')[1].split() for line in out.splitlines()}
  wheels = [w.split('==')[0].lower().replace('_', '-') for w in lists['wheels']]
  assert all('==' in w for w in lists['wheels'])  # one pinned version of each
  named = wheels + lists['preinstalled'] + lists['not_needed']
  assert len(named) == len(set(named))
  assert set(named) == _requirement_names()


def test_the_mesh_stress_run_counts_runs_and_aborts(tmp_path, monkeypatch, capsys):
  """Its short form, at the library's default: a worker trains, nothing aborts or hangs."""
  import mesh_stress  # noqa: E402  (benchmarks/ is not a package)
  from child_env import FAST_COMPILE, XLA_CACHE

  monkeypatch.setenv('XLA_FLAGS', FAST_COMPILE)  # the worker gets the default host devices
  [row] = mesh_stress.main(
    [
      '--minutes',
      '0.02',  # the worker's deadline is 1 s: it trains at least one run
      '--processes',
      '1',
      '--settings',
      'default',
      '--steps',
      '2',
      '--batch',
      '8',
      '--image',
      '8',
      '--teacher',
      'resnet8',
      '--student',
      'resnet8',
      '--compilation_cache_dir',
      str(XLA_CACHE),
      '--out',
      str(tmp_path / 'stress.json'),
    ]
  )
  assert row['runs'] >= 1 and row['steps'] == 2 * row['runs']
  assert (row['aborts'], row['hangs'], row['other_deaths']) == (0, 0, 0), row['deaths']
  assert '--xla_force_host_platform_device_count=' in row['xla_flags']
  assert json.loads((tmp_path / 'stress.json').read_text())['rows'][0]['runs'] == row['runs']
  assert capsys.readouterr().out.startswith('| setting | processes × minutes |')


def test_the_gpu_check_runs_in_cpu_size(tmp_path):
  """`bash benchmarks/gpu_check.sh --cpu OUTDIR`: every row of the step table and every stage of
  the pipeline, written as JSON and Markdown (the numbers themselves are not checked)."""
  import os
  import subprocess

  from child_env import FAST_COMPILE, XLA_CACHE

  root = pathlib.Path(__file__).resolve().parents[1]
  env = dict(
    os.environ,
    XLA_FLAGS=FAST_COMPILE,
    JAX_COMPILATION_CACHE_DIR=str(XLA_CACHE),
    JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0',
  )
  result = subprocess.run(
    ['bash', str(root / 'benchmarks' / 'gpu_check.sh'), '--cpu', str(tmp_path)],
    env=env,
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
  check = json.loads((tmp_path / 'gpu_check.json').read_text())
  assert check['failures'] == []
  labels = [row['label'] for row in check['steps'] if row['framework'] == 'jax']
  assert labels == [
    'teacher float32',
    'teacher float32, K=2',
    'KD 1 teacher float32',
    'KD 3 teachers float32',
    'KD 1 teacher float32, 2 students stacked',
  ]
  by_label = {row['label']: row for row in check['steps']}
  assert by_label['teacher float32, K=2']['steps_per_call'] == 2
  assert by_label['KD 1 teacher float32, 2 students stacked']['runs'] == 2
  e2e = check['end_to_end']
  assert set(e2e['stage_seconds']) == {'teacher', 'select', 'distill', 'report'}
  [student] = e2e['students'].values()
  assert 0 <= student['last_test_accuracy'] <= 1
  table = (tmp_path / 'gpu_check.md').read_text()
  assert table.count('\n| teacher float32 |') == 1 and '- distill:' in table


def test_the_record_of_a_tests_benchmark_names_the_cpu_and_holds_the_rows(tmp_path, monkeypatch):
  """benchmarks/tests_setup.py: what split_drift.py and repeat_run.py write."""
  import tests_setup

  from ckd_jax.workdir.record import cpu_description

  monkeypatch.setattr(sys, 'argv', ['repeat_run.py', '--repeats', '2'])
  rows = [{'run': 1, 'seconds': 1.5}, {'run': 2, 'seconds': 0.5}]
  tests_setup.write_record(tmp_path / 'deep' / 'record.json', rows)
  record = json.loads((tmp_path / 'deep' / 'record.json').read_text())
  assert record['rows'] == rows and record['cpu'] == cpu_description()
  assert record['command'] == 'repeat_run.py --repeats 2' and len(record['date']) == 10
