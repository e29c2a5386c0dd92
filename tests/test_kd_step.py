"""The student KD step: ensemble forward, jit/no-jit/pmap agreement, ESKD cut-off, BN quirk, and the
pipeline's form of it: the teachers' targets in a program of their own, then the student step."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ckd_jax import losses
from ckd_jax.data_parallel import AXIS_NAME, DataParallel
from ckd_jax.models import get_model
from ckd_jax.training import (
  create_train_state,
  init_variables,
  make_distillation_loss_and_grads,
  make_kd_loss_and_grads,
  make_multi_step,
  make_teacher_forward,
  make_teacher_targets,
  make_train_step,
)
from ckd_jax.training.loop import _compiled_prepare, _compiled_update

MEMBERS = 3


@pytest.fixture(scope='module')
def setup():
  teacher = get_model('resnet8_b', 5)
  members = []
  for seed in range(MEMBERS):
    variables = init_variables(teacher, (8, 8, 3), seed)
    # Other running statistics than the batch's, so eval-mode and train-mode BN differ (scaled:
    # a shift of the means by 0.3 left every ReLU off and the logits exactly 0).
    variables = {
      'params': variables['params'],
      'batch_stats': jax.tree.map(lambda v: v * (1.0 + 0.2 * (seed + 1)), variables['batch_stats']),
    }
    members.append(variables)
  stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *members)
  rng = np.random.default_rng(0)
  batch = {
    'image': jnp.asarray(rng.normal(size=(16, 8, 8, 3)), jnp.float32),
    'label': jnp.asarray(rng.integers(0, 5, 16), jnp.int32),
  }
  return teacher, members, stacked, batch


def test_ensemble_forward_equals_separate_forwards(setup):
  teacher, members, stacked, batch = setup
  got = jax.jit(make_teacher_forward(teacher))(stacked, batch['image'])
  chex.assert_shape(got, (MEMBERS, 16, 5))
  apply = jax.jit(teacher.apply)  # one program for the members, not one per operation
  for i, variables in enumerate(members):
    # Tolerance 1e-5: the compiled loop may fuse convolutions differently.
    np.testing.assert_allclose(got[i], apply(variables, batch['image']), rtol=1e-5, atol=1e-5)


def test_train_mode_batch_norm_quirk_uses_batch_statistics(setup):
  teacher, members, stacked, batch = setup
  quirk = jax.jit(make_teacher_forward(teacher, train_mode_batch_norm=True))(
    stacked, batch['image']
  )
  expected = jax.jit(
    lambda variables, images: teacher.apply(variables, images, train=True, mutable=['batch_stats'])
  )(members[1], batch['image'])[0]
  np.testing.assert_allclose(quirk[1], expected, rtol=1e-5, atol=1e-5)
  eval_mode = jax.jit(make_teacher_forward(teacher))(stacked, batch['image'])
  assert np.abs(np.asarray(quirk - eval_mode)).max() > 1e-2


def _student(axis_name=None):
  model = get_model('resnet8_b', 5, axis_name=axis_name)
  return model, create_train_state(model, optax.sgd(0.1, 0.9), (8, 8, 3), seed=7)


def test_kd_loss_in_the_step_is_the_ensemble_kd_loss(setup):
  teacher, _, stacked, batch = setup
  model, state = _student()
  forward = make_teacher_forward(teacher)
  # Jitted: run op by op, the teachers' and student's passes and gradient compile each primitive
  # on its own, slower than the one program. The teachers' logits of the reference come from their
  # own program, so a fusion may change the last float bits: rtol 1e-5.
  (loss, (logits, _)), grads = jax.jit(make_kd_loss_and_grads(model, forward, 0.3, 4.0, 'logits'))(
    state, batch, stacked
  )
  expected = losses.ensemble_kd_loss(
    logits, jax.jit(forward)(stacked, batch['image']), batch['label'], 0.3, 4.0, mode='logits'
  )
  np.testing.assert_allclose(loss, expected, rtol=1e-5)
  assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))


def test_kd_until_step_switches_to_cross_entropy(setup):
  """ESKD (b): before the cut-off the KD loss, from it on plain CE (α = 1)."""
  teacher, _, stacked, batch = setup
  model, state = _student()
  loss_and_grads = jax.jit(
    make_kd_loss_and_grads(model, make_teacher_forward(teacher), 0.5, 4.0, kd_until_step=3)
  )
  before = loss_and_grads(state.replace(step=jnp.asarray(2)), batch, stacked)[0]
  after = loss_and_grads(state.replace(step=jnp.asarray(3)), batch, stacked)[0]
  logits = before[1][0]
  np.testing.assert_allclose(after[0], losses.cross_entropy(logits, batch['label']), rtol=1e-6)
  np.testing.assert_allclose(
    before[0],
    losses.ensemble_kd_loss(
      logits,
      jax.jit(make_teacher_forward(teacher))(stacked, batch['image']),
      batch['label'],
      0.5,
      4.0,
    ),
    rtol=1e-6,
  )


def test_bad_kd_hyperparameters_are_refused_when_building_the_step(setup):
  teacher, _, _, _ = setup
  model, _ = _student()
  with pytest.raises(ValueError, match='alpha'):
    make_kd_loss_and_grads(model, make_teacher_forward(teacher), 1.2, 4.0)
  with pytest.raises(ValueError, match='temperature'):
    make_kd_loss_and_grads(model, make_teacher_forward(teacher), 0.5, -1.0)


def _reference_kd_step(model, teacher, members, state, batch):
  """An independent KD step: the teachers one by one (no vmap), jax.grad of the public loss, and
  optax.sgd(0.1, 0.9)'s first update written out (momentum buffer = gradient: p − 0.1·g).
  Called jitted (op by op it compiles every primitive on its own)."""
  teacher_logits = jnp.stack([teacher.apply(v, batch['image']) for v in members])

  def loss_fn(params):
    logits, updates = model.apply(
      {'params': params, 'batch_stats': state.batch_stats},
      batch['image'],
      train=True,
      mutable=['batch_stats'],
    )
    loss = losses.ensemble_kd_loss(logits, teacher_logits, batch['label'], 0.5, 4.0)
    return loss, updates['batch_stats']

  (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  return jax.tree.map(lambda p, g: p - 0.1 * g, state.params, grads), batch_stats, loss


def _two_programs(model, teacher, parallel, stacked=False):
  """The loop's compiled targets and student step (one step and a block of K each)."""
  add_targets = make_teacher_targets(make_teacher_forward(teacher), 4.0)
  step = make_train_step(make_distillation_loss_and_grads(model, 0.5, 4.0), parallel.axis_name)
  return _compiled_prepare(add_targets, parallel, stacked), _compiled_update(
    step, parallel, stacked
  )


@functools.lru_cache(maxsize=1)
def _variant_case():
  """The variants' shared inputs and the reference step's result, computed once."""
  teacher = get_model('resnet8_b', 5)
  members = [init_variables(teacher, (8, 8, 3), seed) for seed in range(2)]
  rng = np.random.default_rng(1)
  batch = {
    'image': jnp.asarray(rng.normal(size=(16, 8, 8, 3)), jnp.float32),
    'label': jnp.asarray(rng.integers(0, 5, 16), jnp.int32),
  }
  model, state = _student()
  reference = jax.jit(functools.partial(_reference_kd_step, model, teacher))
  stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *members)
  return teacher, stacked, batch, model, state, reference(members, state, batch)


class StudentStepVariantsTest(chex.TestCase):
  """The KD step jitted; the pipeline's two programs (teachers' targets, student step) pmapped
  over 8 fake CPU devices (synchronised BN) and on a mesh of them; against an independently
  written step. Not without jit: the library only runs this step compiled, and op by op each of
  its ~300 primitives compiles alone (the eager paths of the KD loss and the steps are tested in
  test_losses and test_steps)."""

  @chex.variants(with_jit=True, with_pmap=True)
  def test_student_step_agrees(self):
    teacher, stacked, batch, model, state, want = _variant_case()
    want_params, want_stats, want_loss = want
    forward = make_teacher_forward(teacher)

    if self.variant.type == chex.ChexVariantType.WITH_PMAP:
      pmodel, _ = _student(AXIS_NAME)
      parallel = DataParallel('pmap')
      targets = self.variant(
        make_teacher_targets(forward, 4.0),
        axis_name=AXIS_NAME,
        broadcast_args_to_devices=False,
        reduce_fn=None,
      )
      step = parallel.compile(
        make_train_step(make_distillation_loss_and_grads(pmodel, 0.5, 4.0), AXIS_NAME)
      )
      new_state, metrics = parallel.unreplicate(
        step(parallel.replicate(state), targets(parallel.shard(batch), parallel.replicate(stacked)))
      )
    else:
      step = self.variant(make_train_step(make_kd_loss_and_grads(model, forward, 0.5, 4.0)))
      new_state, metrics = step(state, batch, stacked)
      mesh = DataParallel('mesh')  # and the two programs on a device mesh
      (targets, _), (step, _) = _two_programs(model, teacher, mesh)
      on_mesh = mesh.unreplicate(
        step(mesh.replicate(state), targets(mesh.shard(batch), mesh.replicate(stacked)))
      )
      chex.assert_trees_all_close(on_mesh, (new_state, metrics), rtol=1e-5, atol=1e-5)
    # 1e-5: the vmapped teacher forward and the device split sum in another order.
    tol = dict(rtol=1e-5, atol=1e-5)
    chex.assert_trees_all_close(new_state.params, want_params, **tol)
    chex.assert_trees_all_close(new_state.batch_stats, want_stats, **tol)
    np.testing.assert_allclose(metrics['loss'], want_loss, **tol)


def test_bfloat16_kd_runs_student_and_teachers_in_bf16_with_a_float32_loss(setup):
  teacher, _, stacked, batch = setup
  model, state = _student()
  forward = make_teacher_forward(teacher)
  f32 = make_kd_loss_and_grads(model, forward, 0.5, 4.0)
  bf16 = make_kd_loss_and_grads(model, forward, 0.5, 4.0, compute_dtype='bfloat16')
  program = str(jax.make_jaxpr(bf16)(state, batch, stacked))
  # The teachers' first conv (inside the loop over members) and the student's, both in bf16.
  assert program.count('conv_general_dilated') > 2 and 'bf16[16,8,8,16]' in program
  (loss16, _), grads16 = jax.jit(bf16)(state, batch, stacked)
  (loss32, _), grads32 = jax.jit(f32)(state, batch, stacked)
  assert loss16.dtype == jnp.float32 and {g.dtype for g in jax.tree.leaves(grads16)} == {
    jnp.dtype(jnp.float32)
  }
  # bf16 keeps ~3 significant digits; the loss sums many of its roundings: 2 % is ample.
  np.testing.assert_allclose(loss16, loss32, rtol=2e-2)
  assert float(loss16) != float(loss32)


def test_targets_and_student_step_over_a_block_equal_the_one_program_steps(setup):
  """K = 2 steps as the loop runs them with `steps_per_call`: the targets of the block (a loop over
  its batches), then the scanned student steps; against the one-program KD step, twice. Tolerance
  1e-5: the scan and the teachers' loop may fuse differently."""
  teacher, _, stacked, batch = setup
  model, state = _student()
  second = {**batch, 'image': batch['image'][::-1]}
  blocks = jax.tree.map(lambda a, b: jnp.stack([a, b]), batch, second)
  fused = jax.jit(
    make_multi_step(
      make_train_step(make_kd_loss_and_grads(model, make_teacher_forward(teacher), 0.5, 4.0))
    )
  )
  want, want_sums = fused(state, blocks, stacked)
  (_, block_targets), (_, multi_step) = _two_programs(model, teacher, DataParallel('none'))
  got, sums = multi_step(state, block_targets(blocks, stacked))  # (donates `state`)
  tol = dict(rtol=1e-5, atol=1e-5)
  assert int(got.step) == 2
  chex.assert_trees_all_close(got.params, want.params, **tol)
  chex.assert_trees_all_close(got.batch_stats, want.batch_stats, **tol)
  chex.assert_trees_all_close(sums, want_sums, **tol)
