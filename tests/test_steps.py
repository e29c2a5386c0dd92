"""Train/eval steps: they learn, they equal a numpy reference, and pmap and mesh equal one
device."""

import os
import subprocess
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ckd_jax import data_parallel, losses
from ckd_jax.data_parallel import AXIS_NAME, DataParallel
from ckd_jax.models import get_model
from ckd_jax.training import (
  built_once,
  create_train_state,
  make_eval_step,
  make_loss_and_grads,
  make_multi_step,
  make_train_step,
  model_predict,
)

GLOBAL_BATCH = 16
DEVICES = 8


@pytest.fixture(scope='module')
def toy():
  rng = np.random.default_rng(0)
  batch = {
    'image': jnp.asarray(rng.normal(size=(GLOBAL_BATCH, 8, 8, 3)), jnp.float32),
    'label': jnp.asarray(rng.integers(0, 5, GLOBAL_BATCH), jnp.int32),
  }
  return batch


def _state(axis_name=None, lr=0.1):
  model = get_model('resnet8_b', 5, axis_name=axis_name)
  return model, create_train_state(model, optax.sgd(lr, 0.9, nesterov=True), (8, 8, 3), seed=0)


class CrossEntropyTest(chex.TestCase):
  @chex.variants(with_jit=True, without_jit=True)
  def test_matches_numpy(self):
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(6, 4)) * 3
    labels = rng.integers(0, 4, 6)
    log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    got = self.variant(losses.cross_entropy)(logits, labels)
    np.testing.assert_allclose(got, -log_p[np.arange(6), labels].mean(), rtol=1e-5)
    smoothed = self.variant(losses.cross_entropy)(logits, labels, 0.1)
    targets = np.full((6, 4), 0.1 / 4)
    targets[np.arange(6), labels] += 0.9
    np.testing.assert_allclose(smoothed, -(targets * log_p).sum(-1).mean(), rtol=1e-5)


def test_train_step_decreases_loss_on_a_fixed_batch(toy):
  model, state = _state()
  step = jax.jit(make_train_step(make_loss_and_grads(model)))
  losses_seen = []
  for _ in range(8):
    state, metrics = step(state, toy)
    losses_seen.append(float(metrics['loss']))
  assert losses_seen[-1] < 0.5 * losses_seen[0], losses_seen


class EvalStepTest(chex.TestCase):
  @chex.variants(with_jit=True, without_jit=True, with_pmap=True)
  def test_counts_match_numpy(self):
    model, state = _state()
    rng = np.random.default_rng(2)
    batch = {
      'image': jnp.asarray(rng.normal(size=(8, 8, 8, 3)), jnp.float32),
      'label': jnp.asarray(rng.integers(0, 5, 8), jnp.int32),
      'mask': jnp.asarray([True] * 6 + [False] * 2),
    }
    logits = np.asarray(jax.jit(model.apply)(state.variables, batch['image']))
    log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    real = slice(0, 6)
    expected_correct = (logits.argmax(-1) == np.asarray(batch['label']))[real].sum()
    expected_loss = -log_p[np.arange(8), np.asarray(batch['label'])][real].sum()
    copies = 1
    if self.variant.type == chex.ChexVariantType.WITH_PMAP:
      # The inputs copied to all 8 devices (on the host: chex's own broadcast compiles a program
      # per leaf shape): the psum must count every copy.
      copies = DEVICES
      fn = self.variant(
        make_eval_step(model_predict(model), AXIS_NAME),
        axis_name=AXIS_NAME,
        broadcast_args_to_devices=False,
      )
      sums = fn(*DataParallel('pmap').replicate((state.variables, batch)))
    else:
      sums = self.variant(make_eval_step(model_predict(model)))(state.variables, batch)
    assert float(sums['count']) == 6 * copies
    assert float(sums['correct']) == expected_correct * copies
    np.testing.assert_allclose(float(sums['loss']), expected_loss * copies, rtol=1e-5)


def test_pmap_on_8_devices_equals_single_device_step(toy):
  """Same global batch; BN synchronised over devices. Tolerance 1e-5 (float reduction order)."""
  assert jax.local_device_count() == DEVICES
  model, state = _state()
  pmodel, _ = _state(axis_name=AXIS_NAME)
  parallel = DataParallel('pmap')

  single_grads = jax.jit(make_loss_and_grads(model))(state, toy)
  single_state, single_metrics = jax.jit(make_train_step(make_loss_and_grads(model)))(state, toy)

  def pmapped_grads(state, batch):
    (loss, (_, stats)), grads = make_loss_and_grads(pmodel)(state, batch)
    return jax.lax.pmean((loss, stats, grads), AXIS_NAME)

  shard = parallel.shard(toy)
  loss, stats, grads = parallel.unreplicate(
    jax.pmap(pmapped_grads, axis_name=AXIS_NAME)(parallel.replicate(state), shard)
  )
  new_state, metrics = jax.pmap(
    make_train_step(make_loss_and_grads(pmodel), AXIS_NAME), axis_name=AXIS_NAME
  )(parallel.replicate(state), shard)
  new_state, metrics = parallel.unreplicate((new_state, metrics))

  (single_loss, (_, single_stats)), single_g = single_grads
  tol = dict(rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(loss, single_loss, **tol)
  chex.assert_trees_all_close(grads, single_g, **tol)
  chex.assert_trees_all_close(stats, single_stats, **tol)
  chex.assert_trees_all_close(new_state.params, single_state.params, **tol)
  chex.assert_trees_all_close(new_state.batch_stats, single_state.batch_stats, **tol)
  np.testing.assert_allclose(metrics['loss'], single_metrics['loss'], **tol)
  np.testing.assert_allclose(metrics['accuracy'], single_metrics['accuracy'], **tol)
  # The check can fail: without synchronised BN the shards normalise differently.
  unsynced = jax.pmap(make_train_step(make_loss_and_grads(model), AXIS_NAME), axis_name=AXIS_NAME)(
    parallel.replicate(state), shard
  )[1]['loss'][0]
  assert abs(float(unsynced) - float(single_metrics['loss'])) > 1e-4


def test_mesh_over_8_devices_equals_the_single_device_step(toy):
  """The default with several devices: the same jitted step, batch split over a device mesh, no
  axis_name anywhere (XLA inserts the reductions, BN included). Tolerance 1e-5 (reduction order)."""
  model, state = _state()
  step = make_train_step(make_loss_and_grads(model))
  single_state, single_metrics = jax.jit(step)(state, toy)
  parallel = DataParallel('auto')
  assert parallel.mode == 'mesh' and parallel.num_devices == DEVICES and parallel.axis_name is None
  batch = parallel.shard(toy)
  assert len(batch['image'].sharding.device_set) == DEVICES
  assert batch['image'].addressable_shards[0].data.shape == (GLOBAL_BATCH // DEVICES, 8, 8, 3)
  new_state, metrics = parallel.compile(step, donate_state=True)(parallel.replicate(state), batch)
  new_state, metrics = parallel.unreplicate((new_state, metrics))
  tol = dict(rtol=1e-5, atol=1e-5)
  chex.assert_trees_all_close(new_state.params, single_state.params, **tol)
  chex.assert_trees_all_close(new_state.batch_stats, single_state.batch_stats, **tol)
  chex.assert_trees_all_close(metrics, single_metrics, **tol)
  # The check can fail: statistics of one device's 2 examples differ from the global batch's.
  shard_only = jax.jit(step)(state, jax.tree.map(lambda x: x[: GLOBAL_BATCH // DEVICES], toy))
  assert abs(float(shard_only[1]['loss']) - float(single_metrics['loss'])) > 1e-4


def test_data_parallel_refuses_indivisible_batches():
  with pytest.raises(ValueError, match='not divisible'):
    DataParallel('pmap').check_batch_size(12)
  with pytest.raises(ValueError, match="not divisible by the 8 devices of parallel='mesh'"):
    DataParallel('auto').check_batch_size(12)
  assert DataParallel('auto', num_devices=1).mode == 'none'
  with pytest.raises(ValueError, match='Unknown parallel mode'):
    DataParallel('fsdp')


def test_the_cpu_is_split_into_host_devices_before_jax_starts():
  """In a fresh process (the test process already has its 8 devices): the split takes effect,
  an explicit XLA_FLAGS count wins, and once JAX has run it is left alone."""
  script = (
    'import jax, jax.numpy as jnp; from ckd_jax import data_parallel; '
    'first = data_parallel.use_host_devices(3); jnp.ones(1).block_until_ready(); '
    'print(first, jax.device_count(), data_parallel.use_host_devices(5), jax.device_count())'
  )
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
  run = lambda env: subprocess.run(
    [sys.executable, '-c', script], env=env, check=True, capture_output=True, text=True
  ).stdout.split()
  assert run(env) == ['3', '3', 'None', '3']
  assert run(dict(env, XLA_FLAGS='--xla_force_host_platform_device_count=2')) == [
    'None',
    '2',
    'None',
    '2',
  ]
  assert data_parallel.host_device_count(0) == min(8, 2 * os.cpu_count())
  assert data_parallel.host_device_count(5) == 5
  with pytest.raises(ValueError, match='host_devices must be >= 0'):
    data_parallel.host_device_count(-1)


def test_a_scanned_block_equals_its_single_steps(toy):
  """K = 3 steps in one lax.scan call: the same states and the summed metrics. Tolerance 1e-6:
  XLA may fuse the scan's body differently from the single step."""
  model, state = _state()
  step = make_train_step(make_loss_and_grads(model))
  rng = np.random.default_rng(5)
  blocks = {
    'image': jnp.asarray(rng.normal(size=(3, GLOBAL_BATCH, 8, 8, 3)), jnp.float32),
    'label': jnp.asarray(rng.integers(0, 5, (3, GLOBAL_BATCH)), jnp.int32),
  }
  single, sums = state, None
  for k in range(3):
    single, metrics = jax.jit(step)(single, jax.tree.map(lambda x: x[k], blocks))
    sums = metrics if sums is None else jax.tree.map(lambda a, b: a + b, sums, metrics)
  scanned, scanned_sums = jax.jit(make_multi_step(step))(state, blocks)
  assert int(scanned.step) == 3
  tol = dict(rtol=1e-6, atol=1e-6)
  chex.assert_trees_all_close(scanned.params, single.params, **tol)
  chex.assert_trees_all_close(scanned.batch_stats, single.batch_stats, **tol)
  chex.assert_trees_all_close(scanned_sums, sums, **tol)
  # The same block split over 8 devices (batch axis split, step axis whole).
  mesh = DataParallel('mesh')
  on_mesh = mesh.unreplicate(
    mesh.compile(make_multi_step(step), donate_state=True)(
      mesh.replicate(state), mesh.shard(blocks, batch_axis=1)
    )
  )
  chex.assert_trees_all_close(on_mesh[0].params, single.params, rtol=1e-5, atol=1e-5)


def test_bfloat16_computes_in_bf16_and_keeps_float32_state(toy):
  """bf16 passes, float32 parameters, optimizer state, BN statistics and loss; over 6 steps on a
  fixed batch the loss stays within 3 % of float32's (bf16 has 8 bits of mantissa: ~0.4 % per
  rounding, and the short run does not let the differences compound)."""
  model, state = _state()
  f32 = make_loss_and_grads(model)
  bf16 = make_loss_and_grads(model, compute_dtype='bfloat16')
  program = str(jax.make_jaxpr(bf16)(state, toy))
  assert 'conv_general_dilated' in program and 'bf16[16,8,8,16]' in program
  assert 'bf16' not in str(jax.make_jaxpr(f32)(state, toy))
  runs = {}
  for name, loss_and_grads in (('f32', f32), ('bf16', bf16)):
    step, s, seen = jax.jit(make_train_step(loss_and_grads)), state, []
    for _ in range(6):
      s, metrics = step(s, toy)
      seen.append(float(metrics['loss']))
    runs[name] = (s, np.asarray(seen))
  final, seen = runs['bf16']
  for tree in (final.params, final.opt_state, final.batch_stats):
    assert {x.dtype for x in jax.tree.leaves(tree)} == {jnp.dtype(jnp.float32)}
  np.testing.assert_allclose(seen, runs['f32'][1], rtol=3e-2)
  assert not np.array_equal(seen, runs['f32'][1])  # it did compute in bf16
  with pytest.raises(ValueError, match='compute_dtype must be one of'):
    make_loss_and_grads(model, compute_dtype='float16')


def test_built_once_shares_equal_builds_and_keeps_types_and_values_apart():
  """One object per distinct arguments, compared by value and type: a loss built for one label
  smoothing is never handed out for another, nor for another model."""
  same = built_once(make_loss_and_grads, get_model('resnet8', 10), label_smoothing=0.1)
  assert same is built_once(make_loss_and_grads, get_model('resnet8', 10), label_smoothing=0.1)
  assert same is not built_once(make_loss_and_grads, get_model('resnet8', 10), label_smoothing=0)
  assert same is not built_once(make_loss_and_grads, get_model('resnet8', 10), label_smoothing=0.2)
  assert same is not built_once(make_loss_and_grads, get_model('resnet8', 100), label_smoothing=0.1)
  model = get_model('resnet8', 10)
  assert built_once(make_loss_and_grads, model, label_smoothing=0) is not built_once(
    make_loss_and_grads, model, label_smoothing=0.0
  )
