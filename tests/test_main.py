"""The command line and the config files, as a user runs them."""

import json
import os
import pathlib
import subprocess
import sys

import child_env
import pytest
from run_records import untimed_records

from ckd_jax import config_checks

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _main(*args, workdir):
  """A user's command: without the tests' XLA flags (their unoptimised programs would train the
  quick-start's ResNet-20 5× slower)."""
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
  env['PYTHONPATH'] = str(ROOT)
  return subprocess.run(
    [sys.executable, '-m', 'ckd_jax.main', f'--workdir={workdir}', *args],
    cwd=ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=600,
  )


def _load(path_and_arg):
  import importlib.util

  path, _, arg = path_and_arg.partition(':')
  spec = importlib.util.spec_from_file_location('cfg', ROOT / path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg or None)


# The quick-start's teacher stage, short, with a rolling checkpoint every 10 steps.
TEACHER_RUN = (
  '--config=configs/quickstart.py',
  '--config.stages=teacher',
  '--config.teacher.num_seeds=1',
  '--config.teacher.epochs=2',
  '--config.teacher.snapshot_epochs=(1,2)',
  '--config.teacher.optimizer.milestones=(1,)',
  '--config.teacher.checkpoint_every_steps=10',
  '--config.progress=False',
)


@pytest.fixture(scope='module')
def teacher_run(tmp_path_factory):
  """With XLA's defaults, as a user runs it, compiled into the tests' shared cache (its entries
  are keyed by the flags too; the default, the workdir's own cache: the interrupt test)."""
  workdir = tmp_path_factory.mktemp('teacher_run')
  return workdir, _main(
    *TEACHER_RUN, f'--compilation_cache_dir={child_env.XLA_CACHE}', workdir=workdir
  )


def _records(workdir):
  return untimed_records(workdir / 'teachers' / 'resnet8_b_seed0')


def test_quickstart_teacher_run_from_the_command_line(teacher_run):
  tmp_path, result = teacher_run
  assert result.returncode == 0, result.stderr[-3000:]
  assert f'done: results in {tmp_path}' in result.stdout
  run = tmp_path / 'teachers' / 'resnet20_seed0'
  assert sorted(p.name for p in (run / 'snapshots').iterdir() if p.name.isdigit()) == ['1', '2']
  final = json.loads((run / 'final.json').read_text())
  assert final['last_test_accuracy'] > 0.3  # 10 classes: well above chance after two epochs
  assert json.loads((tmp_path / 'config.json').read_text())['teacher']['epochs'] == 2
  assert 'warning' not in result.stderr  # nothing was restarted


# A short teacher run of ResNet-8 on 256 digits, compiled with the tests' XLA options.
SHORT_RUN = (
  '--config=configs/quickstart.py',
  '--config.stages=teacher',
  '--config.teacher.arch=resnet8_b',
  '--config.teacher.num_seeds=1',
  '--config.data.train_examples=256',
  '--config.data.test_examples=120',
  '--config.teacher.epochs=3',
  '--config.teacher.snapshot_epochs=(1,2,3)',
  '--config.teacher.optimizer.milestones=(2,)',
  '--config.teacher.checkpoint_every_steps=3',
  '--config.progress=False',
  f'--compilation_cache_dir={child_env.XLA_CACHE}',
)


def _short_run(workdir, abort_marker=None):
  """SHORT_RUN from the command line; with `abort_marker`, its computing process aborts once,
  right after the snapshot of epoch 1 (tests/abort_once/sitecustomize.py)."""
  env = child_env.without_host_devices()
  env['PYTHONPATH'] = os.pathsep.join([str(ROOT / 'tests' / 'abort_once'), str(ROOT)])
  if abort_marker:
    env['CKD_JAX_TEST_ABORT_MARKER'] = str(abort_marker)
  return subprocess.run(
    [sys.executable, '-m', 'ckd_jax.main', f'--workdir={workdir}', *SHORT_RUN],
    cwd=ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=600,
  )


def test_a_run_whose_process_aborts_ends_where_an_undisturbed_run_ends(tmp_path):
  """The computing process (the command line's child) dies of SIGABRT after the first snapshot:
  the command line says so in one line, resumes from the last checkpoint and ends with the
  undisturbed run's records."""
  reference = _short_run(tmp_path / 'undisturbed')
  assert reference.returncode == 0, reference.stderr[-3000:]
  disturbed = _short_run(tmp_path / 'disturbed', abort_marker=tmp_path / 'aborted')
  assert disturbed.returncode == 0, disturbed.stderr[-3000:]
  assert (tmp_path / 'aborted').exists()
  warning = 'warning: the pipeline process died (it was aborted (SIGABRT))'
  assert disturbed.stderr.count(warning) == 1, disturbed.stderr[-3000:]
  assert 'done: results in' in disturbed.stdout
  assert _records(tmp_path / 'disturbed') == _records(tmp_path / 'undisturbed')


@pytest.mark.parametrize(
  'override,message',
  [
    ('--config.teacher.arch=resnet_nope', 'error: Unknown model'),
    (
      '--config.teacher.epoch=3',
      "error: bad config override among ['--config.teacher.epoch']: "
      '\'epoch\' Did you mean "epochs"',
    ),
  ],
)
def test_bad_input_exits_with_one_line_not_a_traceback(tmp_path, override, message):
  result = _main('--config=configs/quickstart.py', override, workdir=tmp_path)
  assert result.returncode != 0
  assert message in result.stderr and 'Traceback' not in result.stderr
  assert len(result.stderr.strip().splitlines()) == 1, result.stderr
  assert not (tmp_path / 'config.json').exists()


def test_show_config_lists_every_field_with_the_overrides(tmp_path):
  result = _main(
    '--config=configs/quickstart.py', '--config.teacher.epochs=3', '--show_config', workdir=tmp_path
  )
  assert result.returncode == 0, result.stderr
  assert '  epochs: 3' in result.stdout and 'snapshot_epochs' in result.stdout
  assert not list(tmp_path.iterdir())


def test_an_interrupt_exits_with_one_line_and_status_1(tmp_path):
  """The command line's exit on Ctrl-C skips the interpreter's finalisation (a kill of the select
  stage while XLA still ran its program crashed there, 3 times out of 3, by hand): the line is
  still printed and flushed, and the status is 1. The output printed before it is the compilation
  cache the pipeline was given: by default the workdir's own."""
  script = (
    'import sys\n'
    'import jax\n'
    'from absl import app\n'
    'from ckd_jax import main, pipeline\n'
    'def interrupted(*args, **kwargs):\n'
    '  print(jax.config.jax_compilation_cache_dir)\n'
    '  raise KeyboardInterrupt\n'
    'pipeline.run = interrupted\n'
    f'sys.argv = ["main", "--config=configs/quickstart.py", "--workdir={tmp_path}",'
    ' "--resume_after_abort=0"]\n'
    'app.run(main.main, flags_parser=main._parse_flags)\n'
  )
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
  result = subprocess.run(
    [sys.executable, '-c', script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
  )
  assert result.returncode == 1
  assert result.stdout == f'{tmp_path / "xla_cache"}\n'
  assert result.stderr == 'interrupted: rerun the same command to resume where it stopped\n'


@pytest.mark.parametrize(
  'spec,arch,epochs',
  [
    ('configs/quickstart.py', 'resnet20', 10),
    ('configs/cifar100.py', 'wrn_40_2', 200),
    ('configs/cifar100.py:teacher=resnet110', 'resnet110', 200),
    ('configs/cifar100.py:recipe=repdistiller', 'wrn_40_2', 240),
    ('configs/cifar10.py:source=image_folder', 'wrn_40_2', 200),
    ('configs/cifar100.py:teacher_schedule=early_stop', 'wrn_40_2', 50),
    ('configs/fashion_mnist.py', 'resnet20', 30),
    ('configs/cifar10_jpeg.py', 'resnet20', 30),
    (
      'configs/cifar10_jpeg.py:teacher=wrn_40_2,student=wrn_40_1,train_examples=0,epochs=60,'
      'batch_size=128',
      'wrn_40_2',
      60,
    ),
    ('configs/cifar100.py:pair=resnet110-mobilenetv2_075,recipe=repdistiller', 'resnet110', 240),
    ('configs/cifar100.py:source=tfds', 'wrn_40_2', 200),
    ('configs/tiny_imagenet.py', 'wrn_40_2', 200),
  ],
)
def test_config_files_are_valid(spec, arch, epochs):
  config = _load(spec)
  config_checks.validate(config)
  assert config.teacher.arch == arch and config.teacher.epochs == epochs


def test_study_configs_keep_ten_snapshots_with_the_last_epoch_and_refuse_bad_arguments():
  config = _load('configs/fashion_mnist.py:epochs=25,batch_size=128')
  config_checks.validate(config)  # T_full needs a snapshot at epoch 25
  assert config.teacher.snapshot_epochs == (2, 5, 8, 10, 12, 15, 18, 20, 22, 25)
  assert config.teacher.optimizer.milestones == (8, 15, 22)
  assert config.distill.optimizer.learning_rate == 0.1  # 0.1 per 128
  assert config.distill.teachers[:3] == ('epoch:8', 'epoch:12', 'epoch:18')
  with pytest.raises(ValueError, match='at least 10 epochs'):
    _load('configs/fashion_mnist.py:epochs=5')
  with pytest.raises(ValueError, match="epochs='abc' must be an integer"):
    _load('configs/cifar10_jpeg.py:epochs=abc')
  fit = _load('configs/cifar10_jpeg.py:regime=fit')  # a teacher that fits its images
  config_checks.validate(fit)
  assert (fit.data.crop_padding, fit.data.flip, fit.teacher.num_seeds) == (0, False, 1)
  assert fit.distill.teachers == tuple(f'epoch:{e}' for e in range(3, 30, 3)) + (
    'final',
    'selected',
    'none',
  )
  with pytest.raises(ValueError, match="Unknown regime 'fits'"):
    _load('configs/fashion_mnist.py:regime=fits')


def test_paper_recipe_numbers():
  config = _load('configs/cifar100.py')
  opt = config.teacher.optimizer
  assert (opt.learning_rate, opt.momentum, opt.nesterov, opt.weight_decay) == (0.1, 0.9, True, 5e-4)
  assert tuple(opt.milestones) == (60, 120, 180) and config.teacher.batch_size == 128
  assert tuple(config.teacher.snapshot_epochs) == tuple(range(20, 201, 20))
  assert config.data.name == 'cifar100' and config.data.crop_padding == 4 and config.data.flip
  assert (config.data.source, config.data.root, config.data.download) == ('cifar', './data', True)


def test_paper_teacher_choices_and_student_recipes():
  config = _load('configs/cifar100.py')
  assert config.distill.teachers == (
    'epoch:60',
    'epoch:100',
    'epoch:140',
    'final',
    'selected',
    'snapshot_ensemble:100,140,200',
    'full_ensemble:3',
    'none',
  )
  assert (config.distill.student, config.distill.alpha, config.distill.temperature) == (
    'wrn_40_1',
    0.5,
    5.0,
  )
  rd = _load('configs/cifar100.py:pair=wrn_40_2-mobilenetv2_075,recipe=repdistiller')
  assert (rd.distill.alpha, rd.distill.temperature, rd.distill.optimizer.learning_rate) == (
    0.1,
    4.0,
    0.01,
  )
  assert rd.distill.epochs == 240 and rd.teacher.optimizer.learning_rate == 0.05


def test_bad_config_arguments_are_refused():
  with pytest.raises(ValueError, match='Bad config argument'):
    _load('configs/cifar100.py:techer=resnet110')
  with pytest.raises(ValueError, match='Unknown recipe'):
    _load('configs/cifar100.py:recipe=fast')
  with pytest.raises(ValueError, match='Unknown pair'):
    _load('configs/cifar100.py:pair=wrn_40_2-resnet8')
