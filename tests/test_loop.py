"""training.train: what the epoch records say about time."""
import json
import time

import jax
import numpy as np
import optax
import pytest

from ckd_jax.checkpoints import ResumeStore
from ckd_jax.data import make_train_batches
from ckd_jax.data.dataset import Split
from ckd_jax.models import get_model
from ckd_jax.parallel import DataParallel
from ckd_jax.training import (LoopOptions, create_train_state, make_loss_and_grads,
                              make_multi_step, make_train_step, train)


def _no_evaluation(variables, replicated=False):
  del variables, replicated
  return {'test_loss': 0.0, 'test_accuracy': 0.0}


def _seconds(fn):
  start = time.perf_counter()
  fn()
  return time.perf_counter() - start


def test_epoch_time_includes_the_work_dispatched_ahead_of_the_device(tmp_path):
  """JAX returns from a call before the device is done. Epochs timed at their last dispatch (as
  they once were) made K-step blocks look 7× faster than they ran: the epoch time must not be
  shorter than the device's work for the epoch's block, timed here alone (the fastest of 3, less
  10 %)."""
  rng = np.random.default_rng(0)
  split = Split(rng.integers(0, 255, (256, 16, 16, 3), dtype=np.uint8),
                rng.integers(0, 3, 256).astype(np.int32))
  model = get_model('resnet14', 3)
  state = create_train_state(model, optax.sgd(0.01), (16, 16, 3), seed=0)
  step = make_train_step(make_loss_and_grads(model))
  batches = make_train_batches(split, 64, (0.5,) * 3, (0.25,) * 3, 0, False, seed=0)
  block = jax.jit(make_multi_step(step))
  data = batches.block(0, 4)
  jax.block_until_ready(block(state, data))
  device_s = min(_seconds(lambda: jax.block_until_ready(block(state, data))) for _ in range(3))
  train(tmp_path, state, step, _no_evaluation, batches, DataParallel('none'),
        LoopOptions(num_epochs=3, steps_per_call=4, progress=False))
  records = [json.loads(line) for line in (tmp_path / 'metrics.jsonl').read_text().splitlines()]
  assert [r['epoch'] for r in records] == [1, 2, 3]
  for record in records[1:]:  # the first epoch also compiles
    assert record['epoch_time_s'] >= 0.9 * device_s, (record, device_s)


@pytest.mark.parametrize('every,saved_at', [(0, [4, 8]), (3, [3, 6, 9])])
def test_resume_checkpoints_every_n_steps_or_else_at_epoch_ends(tmp_path, monkeypatch, every,
                                                                saved_at):
  """4 steps per epoch, 3 epochs: never at the last step (the run is finished there)."""
  saved = []
  monkeypatch.setattr(ResumeStore, 'save', lambda self, state, extra: saved.append(int(state.step)))
  rng = np.random.default_rng(0)
  split = Split(rng.integers(0, 255, (32, 8, 8, 3), dtype=np.uint8),
                rng.integers(0, 3, 32).astype(np.int32))
  model = get_model('resnet8_b', 3)
  state = create_train_state(model, optax.sgd(0.01), (8, 8, 3), seed=0)
  batches = make_train_batches(split, 8, (0.5,) * 3, (0.25,) * 3, 0, False, seed=0)
  train(tmp_path, state, make_train_step(make_loss_and_grads(model)), _no_evaluation, batches,
        DataParallel('none'), LoopOptions(num_epochs=3, checkpoint_every_steps=every,
                                          progress=False))
  assert saved == saved_at
