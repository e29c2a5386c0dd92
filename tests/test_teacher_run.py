"""The teacher stage end to end on a tiny offline config: snapshots, resume after a kill, pmap,
and refusal of bad input before any compute."""

import json
import math
import os
import signal

import chex
import jax
import numpy as np
import pipeline_configs
import pytest
from pipeline_configs import split_smooth_teacher_config, teacher_stage_config
from run_records import counted_traces, untimed_records

from ckd_jax import pipeline
from ckd_jax.checkpoints import SnapshotStore
from ckd_jax.data import batching, load_dataset
from ckd_jax.data_parallel import DataParallel
from ckd_jax.models import get_model
from ckd_jax.stages import supervised
from ckd_jax.training import make_eval_step, make_evaluator, make_loss_and_grads, model_predict
from ckd_jax.training.loop import DivergenceError
from ckd_jax.workdir.files import read_jsonl
from ckd_jax.workdir.layout import teacher_run_dir


def run_dir(workdir):
  return teacher_run_dir(workdir, 'resnet8_b', 0)


@pytest.fixture(scope='module')
def reference(tmp_path_factory):
  workdir = tmp_path_factory.mktemp('reference')
  config = teacher_stage_config()
  config.tensorboard = True
  pipeline.run(config, workdir)
  return workdir


def _snapshot(workdir, epoch):
  return SnapshotStore(run_dir(workdir)).restore(epoch)


def _metrics(workdir):
  return [json.loads(l) for l in (run_dir(workdir) / 'metrics.jsonl').read_text().splitlines()]


def test_run_leaves_snapshots_metrics_and_config(reference):
  rd = run_dir(reference)
  assert SnapshotStore(rd).epochs() == [1, 2, 3]
  records = _metrics(reference)
  assert [r['epoch'] for r in records] == [1, 2, 3]
  final = json.loads((rd / 'final.json').read_text())
  assert final['last_test_accuracy'] == records[-1]['test_accuracy']
  assert final['best_test_accuracy'] == max(r['test_accuracy'] for r in records)
  assert not (rd / 'resume').exists()
  assert json.loads((reference / 'config.json').read_text())['teacher']['arch'] == 'resnet8_b'
  # MultiStepLR milestone 2: epochs 0 and 1 (0-based) at 0.05, from epoch 2 on at 0.005.
  assert [r['learning_rate'] for r in records] == pytest.approx([0.05, 0.05, 0.005])
  assert records[-1]['train_loss'] < records[0]['train_loss']


def _read_tensorboard_scalars(log_dir):
  """Parses the TFRecord-framed Event protos of an events file: {(tag, step): value}."""
  from tensorboardX.proto import event_pb2

  scalars = {}
  for path in log_dir.glob('events.out.tfevents.*'):
    data, offset = path.read_bytes(), 0
    while offset < len(data):
      length = int.from_bytes(data[offset : offset + 8], 'little')
      event = event_pb2.Event.FromString(data[offset + 12 : offset + 12 + length])
      offset += 16 + length
      for value in event.summary.value:
        scalars[(value.tag, event.step)] = value.simple_value
  return scalars


def test_tensorboard_scalars_equal_the_metrics_log(reference):
  scalars = _read_tensorboard_scalars(run_dir(reference) / 'tensorboard')
  for record in _metrics(reference):
    for key in ('train_loss', 'test_accuracy', 'learning_rate'):
      assert scalars[(key, record['epoch'])] == pytest.approx(record[key], rel=1e-6)


def test_restored_snapshot_evaluates_to_its_recorded_accuracy(reference):
  config = teacher_stage_config()
  dataset = load_dataset(config.data)
  evaluate = make_evaluator(
    make_eval_step(model_predict(get_model('resnet8_b', 10))),
    dataset.test,
    48,
    dataset.mean,
    dataset.std,
    DataParallel('none'),
  )
  for epoch in (1, 3):
    variables, meta = _snapshot(reference, epoch)
    assert meta['arch'] == 'resnet8_b' and meta['epoch'] == epoch
    assert evaluate(variables)['test_accuracy'] == pytest.approx(meta['test_accuracy'], abs=1e-6)


def _assert_ends_like_the_reference(workdir, reference):
  """Bit-identical snapshots and equal epoch records, the interrupted epoch's train means too."""
  for epoch in (2, 3):
    chex.assert_trees_all_equal(_snapshot(workdir, epoch)[0], _snapshot(reference, epoch)[0])
  for got, want in zip(_metrics(workdir), _metrics(reference), strict=True):
    for key in ('epoch', 'train_loss', 'train_accuracy', 'test_loss', 'test_accuracy'):
      assert got[key] == want[key], key


def _killed_at_step_11(workdir, monkeypatch):
  """Runs teacher_stage_config() until a simulated kill at step 11 (epoch 2, step 5; the last
  rolling checkpoint is at step 8)."""
  real_batch = batching.TrainBatches.batch

  def killed_at_step_11(self, step):
    if step == 11:
      raise RuntimeError('simulated kill')
    return real_batch(self, step)

  monkeypatch.setattr(batching.TrainBatches, 'batch', killed_at_step_11)
  with pytest.raises(RuntimeError, match='simulated kill'):
    pipeline.run(teacher_stage_config(), workdir)
  monkeypatch.setattr(batching.TrainBatches, 'batch', real_batch)


def test_kill_mid_epoch_then_rerun_ends_exactly_like_an_uninterrupted_run(
  tmp_path, monkeypatch, reference
):
  _killed_at_step_11(tmp_path, monkeypatch)
  assert (run_dir(tmp_path) / 'resume' / '8').exists()
  assert not (run_dir(tmp_path) / 'final.json').exists()

  pipeline.run(teacher_stage_config(), tmp_path)
  _assert_ends_like_the_reference(tmp_path, reference)


def test_a_record_torn_by_the_kill_is_repaired_on_resume(tmp_path, monkeypatch, reference):
  """A kill (or a full disk) during the append of an epoch record leaves half a line: it follows
  the last checkpoint, so the resume drops it and redoes that epoch."""
  _killed_at_step_11(tmp_path, monkeypatch)
  metrics = run_dir(tmp_path) / 'metrics.jsonl'
  metrics.write_text(metrics.read_text() + '{"epoch": 2, "train_lo')
  from ckd_jax.workdir.files import DamagedFileError, read_jsonl

  with pytest.raises(
    DamagedFileError,
    match='metrics.jsonl is damaged .its last line was cut short.: rerun the same command',
  ):
    read_jsonl(metrics)
  pipeline.run(teacher_stage_config(), tmp_path)
  _assert_ends_like_the_reference(tmp_path, reference)


def test_a_damaged_record_of_a_finished_run_is_named_not_a_parse_error(reference, tmp_path):
  import shutil

  copy = tmp_path / 'copy'
  shutil.copytree(reference, copy)
  metrics = run_dir(copy) / 'metrics.jsonl'
  lines = metrics.read_text().splitlines(keepends=True)
  metrics.write_text(lines[0] + '{"epoch": 2, oops}\n' + ''.join(lines[2:]))
  config = teacher_stage_config()
  config.stages = 'report'
  with pytest.raises(ValueError, match=r'metrics.jsonl is damaged \(line 2: '):
    pipeline.run(config, copy)


def test_rerunning_a_finished_run_does_nothing(reference):
  final = run_dir(reference) / 'final.json'
  before = final.stat().st_mtime_ns
  pipeline.run(teacher_stage_config(), reference)
  assert final.stat().st_mtime_ns == before


@pytest.fixture(scope='module')
def unpadded_reference(tmp_path_factory):
  """The single-device run that the split, blocked and stacked runs are compared with, on the
  smooth trajectory of split_smooth_teacher_config (pipeline_configs.py says why)."""
  workdir = tmp_path_factory.mktemp('unpadded')
  pipeline.run(split_smooth_teacher_config('none'), workdir)
  return workdir


@pytest.mark.parametrize('mode', ['pmap', 'mesh'])
def test_data_parallel_run_matches_single_device_run(tmp_path, unpadded_reference, mode):
  pipeline.run(split_smooth_teacher_config(mode), tmp_path)
  for epoch in (1, 3):
    got, meta = _snapshot(tmp_path, epoch)
    want, ref_meta = _snapshot(unpadded_reference, epoch)
    # One split step equals the single-device step to 1e-5 (test_steps.py); over these 18 smooth
    # steps the difference stays at float rounding (≤ 1e-6 seen); a wrong sync differs by > 1e-2.
    chex.assert_trees_all_close(got, want, rtol=0, atol=1e-4)
    assert meta['test_accuracy'] == ref_meta['test_accuracy']


@pytest.fixture(scope='module')
def blocks_of_4(tmp_path_factory):
  """The unpadded run with 4 steps per call, cut at the rolling checkpoints every 5 steps and at the
  epoch ends every 6: blocks of 4 at steps 0 and 6, single steps where a cut leaves fewer."""
  workdir = tmp_path_factory.mktemp('blocks')
  config = split_smooth_teacher_config('none')
  config.steps_per_call, config.teacher.checkpoint_every_steps = 4, 5
  pipeline.run(config, workdir)
  return workdir, config


def test_steps_per_call_runs_the_same_training(blocks_of_4, unpadded_reference):
  workdir, _ = blocks_of_4
  for epoch in (1, 3):
    got, meta = _snapshot(workdir, epoch)
    want, ref_meta = _snapshot(unpadded_reference, epoch)
    # A scanned block equals its single steps to 1e-6 (test_steps.py), smooth trajectory as above.
    chex.assert_trees_all_close(got, want, rtol=0, atol=1e-4)
    assert meta['test_accuracy'] == ref_meta['test_accuracy']
  for got, want in zip(_metrics(workdir), _metrics(unpadded_reference), strict=True):
    assert got['train_loss'] == pytest.approx(want['train_loss'], rel=1e-5)


def test_a_killed_run_with_blocks_resumes_exactly(tmp_path, monkeypatch, blocks_of_4):
  """Killed at the block 6-10; the last rolling checkpoint is at step 5, so the rerun replays step 5
  alone, then the same block. Every block is K = 4 steps long (one compiled length)."""
  reference, config = blocks_of_4
  real_block, blocks = batching.TrainBatches.block, []

  def killed_at_step_6(self, step, length):
    blocks.append((step, length))
    if step == 6 and len(blocks) == 2:
      raise RuntimeError('simulated kill')
    return real_block(self, step, length)

  monkeypatch.setattr(batching.TrainBatches, 'block', killed_at_step_6)
  with pytest.raises(RuntimeError, match='simulated kill'):
    pipeline.run(config, tmp_path)
  assert (run_dir(tmp_path) / 'resume' / '5').exists()
  pipeline.run(config, tmp_path)
  assert blocks == [(0, 4), (6, 4), (6, 4)]
  _assert_ends_like_the_reference(tmp_path, reference)


def test_seeds_and_a_rerun_in_the_same_process_share_one_traced_step(tmp_path, monkeypatch):
  """Without vectorize, the seeds share one compiled step: traced once, not once per run. The same
  config run again in this process traces nothing at all (`built_once`: step, evaluator, data cuts,
  init), and a changed setting gets a step of its own, never the shared one."""
  from ckd_jax.stages import teacher

  traces, real = [], teacher.make_loss_and_grads

  def counted_loss_and_grads(*args, **kwargs):
    loss_and_grads = real(*args, **kwargs)

    def counted(*a, **k):
      traces.append(kwargs['label_smoothing'])  # runs only while JAX traces the step
      return loss_and_grads(*a, **k)

    return counted

  monkeypatch.setattr(teacher, 'make_loss_and_grads', counted_loss_and_grads)
  config = pipeline_configs.tiny_config(teacher_seeds=2, epochs=1, milestones=(), stages='teacher')
  pipeline.run(config, tmp_path / 'first')
  assert all(
    (teacher_run_dir(tmp_path / 'first', 'resnet8_b', seed) / 'final.json').exists()
    for seed in (0, 1)
  )
  assert traces == [0.0]

  with counted_traces() as jax_traces:
    pipeline.run(config, tmp_path / 'again')
  assert jax_traces == [] and traces == [0.0]
  assert _seed0_records(tmp_path / 'again') == _seed0_records(tmp_path / 'first')

  config.teacher.label_smoothing = 0.1
  pipeline.run(config, tmp_path / 'changed')
  assert traces == [0.0, 0.1]
  changed, first = _seed0_records(tmp_path / 'changed'), _seed0_records(tmp_path / 'first')
  assert [r['train_loss'] for r in changed] != [r['train_loss'] for r in first]


def _seed0_records(workdir):
  return untimed_records(run_dir(workdir))


def _vectorised_config():
  config = split_smooth_teacher_config('none')
  config.teacher.num_seeds, config.teacher.vectorize = 2, True
  return config


@pytest.fixture(scope='module')
def vectorised(tmp_path_factory):
  """Teacher seeds 0 and 1 trained as one vmapped program."""
  workdir = tmp_path_factory.mktemp('vectorised')
  pipeline.run(_vectorised_config(), workdir)
  return workdir


def test_vectorised_seeds_train_as_when_alone(vectorised, unpadded_reference, tmp_path):
  alone = split_smooth_teacher_config('none')
  alone.seed = 1
  pipeline.run(alone, tmp_path)
  for seed, reference in ((0, unpadded_reference), (1, tmp_path)):
    got = SnapshotStore(teacher_run_dir(vectorised, 'resnet8_b', seed))
    want = SnapshotStore(teacher_run_dir(reference, 'resnet8_b', seed))
    for epoch in (1, 3):
      # vmap turns the convolutions into batched ones, which sum in another order; on this smooth
      # trajectory that stays at float rounding (as the device split, above).
      chex.assert_trees_all_close(got.restore(epoch)[0], want.restore(epoch)[0], rtol=0, atol=1e-4)
      assert got.metadata(epoch)['test_accuracy'] == want.metadata(epoch)['test_accuracy']
    records = read_jsonl(teacher_run_dir(vectorised, 'resnet8_b', seed) / 'metrics.jsonl')
    assert [r['epoch'] for r in records] == [1, 2, 3]


def test_a_killed_vectorised_run_resumes_exactly(vectorised, tmp_path, monkeypatch):
  real_batch = batching.TrainBatches.batch
  calls = []

  def killed_at_step_11(self, step):
    calls.append(step)
    if step == 11:
      raise RuntimeError('simulated kill')
    return real_batch(self, step)

  monkeypatch.setattr(batching.TrainBatches, 'batch', killed_at_step_11)
  with pytest.raises(RuntimeError, match='simulated kill'):
    pipeline.run(_vectorised_config(), tmp_path)
  assert calls.count(10) == 2  # one batch per run and step: both seeds in one program
  for seed in (0, 1):
    assert (teacher_run_dir(tmp_path, 'resnet8_b', seed) / 'resume' / '8').exists()
  monkeypatch.setattr(batching.TrainBatches, 'batch', real_batch)
  pipeline.run(_vectorised_config(), tmp_path)
  for seed in (0, 1):
    got = SnapshotStore(teacher_run_dir(tmp_path, 'resnet8_b', seed))
    want = SnapshotStore(teacher_run_dir(vectorised, 'resnet8_b', seed))
    for epoch in (2, 3):
      chex.assert_trees_all_equal(got.restore(epoch)[0], want.restore(epoch)[0])


def _out_of_memory():
  """The error XLA raises on an accelerator without the memory for a program."""
  return jax.errors.JaxRuntimeError(
    'RESOURCE_EXHAUSTED: Out of memory while trying to allocate 1073741824 bytes.'
  )


def test_stacked_seeds_that_do_not_fit_in_memory_train_one_by_one(
  tmp_path, monkeypatch, capsys, unpadded_reference
):
  """The pair's first step fails as on a device without the memory for two stacked runs: the stage
  says so in one line and trains them as two groups of one, each as when alone."""
  real_compile = DataParallel.compile

  def compile_without_memory_for_two(self, step, donate_state=False, **options):
    compiled = real_compile(self, step, donate_state, **options)

    def step_or_out_of_memory(state, *args):
      if donate_state and np.ndim(state.step) > 0:  # a training step over stacked runs
        raise _out_of_memory()
      return compiled(state, *args)

    return step_or_out_of_memory

  monkeypatch.setattr(DataParallel, 'compile', compile_without_memory_for_two)
  pipeline.run(_vectorised_config(), tmp_path)
  assert (
    '2 stacked runs do not fit in the device memory: training them as 1 and 1 '
    '(vectorize_max_runs=1 starts there)'
  ) in capsys.readouterr().out
  for epoch in (1, 3):  # a group of one is the run alone: the same program, the same numbers
    chex.assert_trees_all_equal(
      _snapshot(tmp_path, epoch)[0], _snapshot(unpadded_reference, epoch)[0]
    )
  seed_1 = teacher_run_dir(tmp_path, 'resnet8_b', 1)
  assert [r['epoch'] for r in read_jsonl(seed_1 / 'metrics.jsonl')] == [1, 2, 3]
  assert (seed_1 / 'final.json').exists()


def _train_with_fake_loop(monkeypatch, tmp_path, fake_train, vectorize, run_count=4, max_runs=3):
  """supervised.train on `run_count` runs of the tiny config with `fake_train` as the loop (no state
  is built, nothing compiles); returns what it returns."""
  config = teacher_stage_config()
  config.teacher.vectorize, config.vectorize_max_runs = vectorize, max_runs
  monkeypatch.setattr(supervised, 'create_train_state', lambda *args: None)
  monkeypatch.setattr(supervised, 'make_train_batches', lambda *args, **kwargs: None)
  monkeypatch.setattr(supervised.training, 'train', fake_train)
  spec = supervised.RunSpec.from_config(config, config.teacher, 'resnet8_b')
  runs = [
    supervised.Run(seed, tmp_path / f'run{seed}', f'run {seed}') for seed in range(1, run_count + 1)
  ]
  return supervised.train(
    spec, load_dataset(config.data), runs, DataParallel('none'), make_loss_and_grads
  )


def test_only_a_stacked_group_that_does_not_fit_is_split(tmp_path, monkeypatch):
  """Runs 1-4 in chunks of at most 3: [1, 2, 3] does not fit, nor [1, 2]; each alone does."""
  tried = []

  def fits_alone(runs, *args):
    tried.append([run.description for run in runs])
    if len(runs) > 1:
      raise _out_of_memory()
    return [f'{run.description} trained' for run in runs]

  assert _train_with_fake_loop(monkeypatch, tmp_path, fits_alone, vectorize=True) == [
    'run 1 trained',
    'run 2 trained',
    'run 3 trained',
    'run 4 trained',
  ]
  assert tried == [
    ['run 1', 'run 2', 'run 3'],
    ['run 1', 'run 2'],
    ['run 1'],
    ['run 2'],
    ['run 3'],
    ['run 4'],
  ]

  def fails_alone(runs, *args):
    raise _out_of_memory()

  for vectorize in (True, False):  # one run that does not fit fails as it would alone
    with pytest.raises(jax.errors.JaxRuntimeError, match='RESOURCE_EXHAUSTED'):
      _train_with_fake_loop(monkeypatch, tmp_path, fails_alone, vectorize)

  def other_error(runs, *args):
    raise jax.errors.JaxRuntimeError('INTERNAL: something else')

  with pytest.raises(jax.errors.JaxRuntimeError, match='INTERNAL'):
    _train_with_fake_loop(monkeypatch, tmp_path, other_error, vectorize=True)


def test_evaluation_pads_a_batch_that_the_devices_do_not_divide(reference):
  """48 test images in batches of 20 over 8 devices: rounded up to 24, padding masked."""
  config = teacher_stage_config()
  dataset = load_dataset(config.data)
  variables, meta = _snapshot(reference, 3)
  predict = make_eval_step(model_predict(get_model('resnet8_b', 10)))
  on_mesh = make_evaluator(
    predict, dataset.test, 20, dataset.mean, dataset.std, DataParallel('mesh')
  )(variables)
  assert on_mesh['test_accuracy'] == pytest.approx(meta['test_accuracy'], abs=1e-6)
  assert on_mesh['test_loss'] == pytest.approx(meta['test_loss'], rel=1e-5)


def test_workdir_of_another_config_is_refused_naming_the_fields(reference):
  with pytest.raises(ValueError, match=r'teacher\.label_smoothing: 0\.0 in the workdir, 0\.1 now'):
    pipeline.run(teacher_stage_config(label_smoothing=0.1), reference)
  changed = teacher_stage_config()
  changed.stages = 'teacher'
  changed.progress = True  # volatile fields may change
  changed.tensorboard = False
  pipeline.run(changed, reference)


def _bad(**changes):
  config = teacher_stage_config()
  for dotted, value in changes.items():
    section, _, key = dotted.rpartition('.')
    (config[section] if section else config)[key] = value
  return config


@pytest.mark.parametrize(
  'config,message',
  [
    (_bad(**{'teacher.arch': 'resnet_nope'}), 'Unknown model'),
    (_bad(**{'data.source': 'mnist_csv'}), 'Unknown data source'),
    (_bad(**{'teacher.snapshot_epochs': (1, 5)}), 'snapshot_epochs'),
    (_bad(**{'teacher.snapshot_epochs': (2, 1, 3)}), 'snapshot_epochs'),
    (_bad(**{'teacher.snapshot_epochs': (1, 2)}), 'last epoch'),
    (_bad(**{'parallel': 'pmap', 'teacher.batch_size': 36}), 'not divisible'),
    (_bad(**{'stages': 'teach'}), 'unknown stage'),
    (_bad(**{'teacher.optimizer.milestones': (5,)}), 'milestones'),
    (_bad(**{'dtype': 'float16'}), "dtype must be one of \\('float32', 'bfloat16'\\)"),
    (_bad(**{'steps_per_call': 0}), 'steps_per_call must be >= 1'),
    (_bad(**{'teacher.checkpoint_every_steps': -5}), 'teacher.checkpoint_every_steps must be >= 0'),
    (_bad(**{'parallel': 'mesh', 'sync_batch_norm': False}), "needs parallel='pmap'"),
  ],
)
def test_bad_input_is_refused_before_any_compute(tmp_path, config, message):
  with pytest.raises(ValueError, match=message):
    pipeline.run(config, tmp_path)
  assert not (tmp_path / 'teachers').exists() and not (tmp_path / 'manifest.json').exists()


def test_missing_data_directory_is_refused_before_training(tmp_path):
  config = teacher_stage_config()
  config.data.source = 'image_folder'
  config.data.root = str(tmp_path / 'no_such_folder')
  with pytest.raises(FileNotFoundError, match='no_such_folder'):
    pipeline.run(config, tmp_path / 'work')
  assert not list((tmp_path / 'work' / 'teachers').rglob('metrics.jsonl'))


def test_divergence_stops_the_run_and_saves_nothing_non_finite(tmp_path):
  config = teacher_stage_config()
  config.teacher.optimizer.learning_rate = 1e4
  with pytest.raises(
    DivergenceError, match='teacher resnet8_b seed 0 diverged: non-finite .* by step'
  ):
    pipeline.run(config, tmp_path)
  rd = run_dir(tmp_path)
  assert not (rd / 'final.json').exists()
  assert all(math.isfinite(r['train_loss']) for r in read_jsonl(rd / 'metrics.jsonl'))
  store = SnapshotStore(rd)
  for epoch in store.epochs():
    assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(store.restore(epoch)[0]))
  # The rerun resumes from the last good state and stops again with the same message.
  with pytest.raises(DivergenceError, match='diverged'):
    pipeline.run(config, tmp_path)


def test_an_interrupt_stops_between_two_steps_with_an_exact_checkpoint(
  tmp_path, monkeypatch, reference
):
  """SIGTERM (a preemption) arriving inside a step (here: right after step 9's computation,
  before the loop sees its result) stops the loop at the next step boundary with a checkpoint of
  exactly the steps done, their metrics included; the rerun ends exactly like an uninterrupted
  run. SIGINT and SIGUSR2 take the same handler (test_loop.py)."""
  real_compile = DataParallel.compile
  calls = {'n': 0}

  def compile_and_signal(self, step, donate_state=False, **options):
    compiled = real_compile(self, step, donate_state, **options)
    if not donate_state:  # the evaluator
      return compiled

    def step_then_signal(*args):
      out = compiled(*args)
      calls['n'] += 1
      if calls['n'] == 10:
        os.kill(os.getpid(), signal.SIGTERM)
      return out

    return step_then_signal

  monkeypatch.setattr(DataParallel, 'compile', compile_and_signal)
  with pytest.raises(KeyboardInterrupt):
    pipeline.run(teacher_stage_config(), tmp_path)
  assert sorted(p.name for p in (run_dir(tmp_path) / 'resume').iterdir()) == ['10']
  monkeypatch.undo()
  pipeline.run(teacher_stage_config(), tmp_path)
  _assert_ends_like_the_reference(tmp_path, reference)


@pytest.mark.parametrize(
  'change,message',
  [
    (dict(arch='resnet21'), 'depth must be 6n\\+2'),
    (dict(source='image_folder'), 'no directory'),
    (dict(source='fashion_mnist', root='/nonexistent'), 'Fashion-MNIST file'),
  ],
)
def test_a_refused_config_writes_nothing_so_the_corrected_command_runs(tmp_path, change, message):
  config = teacher_stage_config()
  if 'arch' in change:
    config.teacher.arch = change['arch']
  else:
    config.data.update({k: v for k, v in change.items()})
  with pytest.raises(ValueError if 'arch' in change else FileNotFoundError, match=message):
    pipeline.run(config, tmp_path)
  assert not (tmp_path / 'config.json').exists() and not (tmp_path / 'teachers').exists()
  corrected = teacher_stage_config()
  corrected.stages = 'report'  # the corrected command is accepted (the report needs no data)
  pipeline.run(corrected, tmp_path)
