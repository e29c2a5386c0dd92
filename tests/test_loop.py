"""training.train: what the epoch records say about time, and when the resume checkpoint is
saved."""

import gc
import json
import os
import signal
import time

import numpy as np
import optax
import pytest

from ckd_jax.checkpoints import ResumeStore
from ckd_jax.data import make_train_batches
from ckd_jax.data.dataset import Split
from ckd_jax.data_parallel import DataParallel
from ckd_jax.models import get_model
from ckd_jax.training import (
  LoopOptions,
  LoopRun,
  Step,
  create_train_state,
  loop,
  make_loss_and_grads,
  make_train_step,
  train,
)
from ckd_jax.training.loop import _StopAtStepBoundary

WAIT_S = 0.5


def _no_evaluation(variables, replicated=False):
  del variables, replicated
  return {'test_loss': 0.0, 'test_accuracy': 0.0}


def _tiny_run():
  """A ResNet-8 on 8×8 images, 4 steps of 8 per epoch: (model, state, batches)."""
  rng = np.random.default_rng(0)
  split = Split(
    rng.integers(0, 255, (32, 8, 8, 3), dtype=np.uint8), rng.integers(0, 3, 32).astype(np.int32)
  )
  model = get_model('resnet8_b', 3)
  state = create_train_state(model, optax.sgd(0.01), (8, 8, 3), seed=0)
  return model, state, make_train_batches(split, 8, (0.5,) * 3, (0.25,) * 3, 0, False, seed=0)


def test_epoch_time_includes_the_wait_for_work_dispatched_ahead(tmp_path, monkeypatch):
  """JAX returns from a call before the device is done; the epoch's one sync is where the host waits
  for the rest. Epochs timed before that sync (as they once were) made K-step blocks look 7× faster
  than they ran. Here the sync is made to last WAIT_S (no checkpoint syncs between the
  epochs): the epoch's time must hold it."""
  real_sums = loop._Lockstep._sums

  def slow_sums(self, meter):
    time.sleep(WAIT_S)
    return real_sums(self, meter)

  monkeypatch.setattr(loop._Lockstep, '_sums', slow_sums)
  model, state, batches = _tiny_run()
  train(
    [LoopRun(tmp_path, state, batches)],
    Step(make_train_step(make_loss_and_grads(model))),
    _no_evaluation,
    DataParallel('none'),
    LoopOptions(num_epochs=2, checkpoint_every_steps=1000, steps_per_call=4, progress=False),
  )
  records = [json.loads(line) for line in (tmp_path / 'metrics.jsonl').read_text().splitlines()]
  assert [r['epoch'] for r in records] == [1, 2]
  assert records[1]['epoch_time_s'] >= WAIT_S, records  # the first one also compiles


@pytest.mark.parametrize('every,saved_at', [(0, [4, 8]), (3, [3, 6, 9])])
def test_resume_checkpoints_every_n_steps_or_else_at_epoch_ends(
  tmp_path, monkeypatch, every, saved_at
):
  """4 steps per epoch, 3 epochs: never at the last step (the run is finished there)."""
  saved = []
  monkeypatch.setattr(ResumeStore, 'save', lambda self, state, extra: saved.append(int(state.step)))
  model, state, batches = _tiny_run()
  train(
    [LoopRun(tmp_path, state, batches)],
    Step(make_train_step(make_loss_and_grads(model))),
    _no_evaluation,
    DataParallel('none'),
    LoopOptions(num_epochs=3, checkpoint_every_steps=every, progress=False),
  )
  assert saved == saved_at


class _Clock:
  """A stand-in for the loop's `time` module: it moves only when a test moves it."""

  now = 0.0

  def perf_counter(self):
    return self.now


@pytest.mark.parametrize('every', [0, 2])
def test_checkpoint_writes_are_not_counted_in_epoch_times(tmp_path, monkeypatch, every):
  """Every resume checkpoint 'takes' 10 s on a clock that nothing else moves: the epochs' times
  (and their img/s) stay those of the steps alone, whether the checkpoint is mid-epoch (every 2
  steps) or at epoch ends (once counted in the next epoch)."""
  clock = _Clock()
  monkeypatch.setattr(loop, 'time', clock)

  def slow_save(self, state, extra):
    clock.now += 10.0

  monkeypatch.setattr(ResumeStore, 'save', slow_save)
  model, state, batches = _tiny_run()
  train(
    [LoopRun(tmp_path, state, batches)],
    Step(make_train_step(make_loss_and_grads(model))),
    _no_evaluation,
    DataParallel('none'),
    LoopOptions(num_epochs=3, checkpoint_every_steps=every, progress=False),
  )
  records = [json.loads(line) for line in (tmp_path / 'metrics.jsonl').read_text().splitlines()]
  assert clock.now >= 20.0  # the checkpoints were written
  assert [r['epoch_time_s'] for r in records] == [0.0, 0.0, 0.0]


def test_run_constants_without_a_prepare_are_refused_before_any_file(tmp_path):
  """Constants feed `Step.prepare`; a step without one would silently drop them (a KD student
  trained without its teachers)."""
  _, state, batches = _tiny_run()
  with pytest.raises(ValueError, match='Step.prepare'):
    train(
      [LoopRun(tmp_path / 'run', state, batches, constants=({'w': np.zeros(2)},))],
      Step(update=lambda state, batch: (state, {})),
      _no_evaluation,
      DataParallel('none'),
      LoopOptions(num_epochs=1, progress=False),
    )
  assert not (tmp_path / 'run').exists()


@pytest.mark.parametrize(
  'signum', [signal.SIGINT, signal.SIGTERM, signal.SIGUSR2], ids=lambda s: s.name
)
def test_each_stop_signal_asks_for_a_stop_at_the_next_step_and_a_second_one_stops_at_once(signum):
  """The loop checks `requested` between two steps (test_teacher_run.py's interrupt test runs the
  whole path once); every stop signal goes through the same handler, and the process's own
  handler is back afterwards."""
  received = []
  previous = signal.signal(signum, lambda *_: received.append(signum))
  # Without collections: Python runs a handler at its next check, and a collection there would run
  # it inside jax's GC callback, where a KeyboardInterrupt cannot reach the test.
  gc.disable()
  try:
    with _StopAtStepBoundary() as stop:
      assert stop.requested is None
      os.kill(os.getpid(), signum)
      assert stop.requested == signal.Signals(signum).name
      with pytest.raises(KeyboardInterrupt):
        os.kill(os.getpid(), signum)
    os.kill(os.getpid(), signum)
    assert received == [signum]
  finally:
    gc.enable()
    signal.signal(signum, previous)
