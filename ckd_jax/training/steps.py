"""Pure train/eval step builders. They know nothing of files, loops or devices.

With `axis_name` set the steps run under `pmap`: gradients, metrics and BatchNorm statistics are
averaged over devices. Models built with the same `axis_name` also synchronise BatchNorm batch
statistics, which makes a pmapped step equal to the single-device step on the same global batch.
"""

import functools

import jax
import jax.numpy as jnp

from ckd_jax import losses
from ckd_jax.training import precision


@functools.lru_cache(maxsize=64, typed=True)
def built_once(builder, *args, **kwargs):
  """`builder(*args, **kwargs)`, one object per distinct arguments in a process.

  JAX reuses a trace and its compiled program only for the same Python function object, and the
  builders here return a new closure at every call. Built through this, runs with equal settings
  (the seeds of a stage, a pipeline run again in the same process, a sweep in a notebook) share
  their programs instead of tracing and loading them again. The arguments must be everything the
  closure computes with, compared by value: numbers and strings (`typed`: 1 and 1.0 differ), flax
  modules (dataclasses), and functions that are themselves `built_once` or module-level.
  """
  return builder(*args, **kwargs)


def _mean_over_devices(tree, axis_name):
  return jax.lax.pmean(tree, axis_name) if axis_name else tree


def _forward_train(model, params, state, images, compute_dtype):
  """The training-mode forward in `compute_dtype` -> (float32 logits, new batch statistics)."""
  logits, updates = model.apply(
    {'params': precision.cast_params(params, compute_dtype), 'batch_stats': state.batch_stats},
    images.astype(compute_dtype),
    train=True,
    mutable=['batch_stats'],
  )
  return logits.astype(jnp.float32), updates['batch_stats']


def make_loss_and_grads(model, label_smoothing=0.0, compute_dtype='float32'):
  """(state, batch) -> ((loss, (logits, new_batch_stats)), grads) on this device's shard.

  `compute_dtype='bfloat16'`: the passes in bf16, parameters, gradients and loss in float32.
  """
  dtype = precision.check_dtype(compute_dtype, 'compute_dtype')

  def loss_fn(params, state, batch):
    logits, batch_stats = _forward_train(model, params, state, batch['image'], dtype)
    loss = losses.cross_entropy(logits, batch['label'], label_smoothing)
    return loss, (logits, batch_stats)

  def loss_and_grads(state, batch):
    return jax.value_and_grad(loss_fn, has_aux=True)(state.params, state, batch)

  return loss_and_grads


def make_teacher_forward(teacher_model, train_mode_batch_norm=False):
  """(stacked teacher variables, images) -> (M, B, K) logits, no gradient, inside the step.

  The members run one after another in ONE compiled loop (`lax.map`): a `vmap` over stacked conv
  kernels becomes a batched-kernel convolution, which XLA's CPU backend runs far slower
  (benchmarks/RESULTS.md; revisit on GPUs), and the loop compiles once whatever M. Teachers are
  frozen and use their running BN statistics. `train_mode_batch_norm=True` reproduces the authors'
  code, which left the teacher in train mode (batch statistics, updates discarded).
  """

  def one_teacher(variables, images):
    if train_mode_batch_norm:
      return teacher_model.apply(variables, images, train=True, mutable=['batch_stats'])[0]
    return teacher_model.apply(variables, images, train=False)

  def forward(teacher_variables, images):
    logits = jax.lax.map(lambda variables: one_teacher(variables, images), teacher_variables)
    return jax.lax.stop_gradient(logits)

  return forward


TEACHER_LOG_PROBS = 'teacher_log_probs'


def make_teacher_targets(
  teacher_forward, temperature, ensemble_mode='probs', compute_dtype='float32'
):
  """(batch, stacked teacher variables) -> the batch with 'teacher_log_probs': the (ensemble)
  teacher's log p_t^τ (B, K), float32, no gradient. The teachers run in `compute_dtype`.

  The training loop runs it as a program of its own before each step (`Step.prepare`), so that the
  student's step takes no teacher: one compiled step serves every teacher choice, and only this
  forward, smaller than a fused KD step, compiles once per member count.
  """
  losses.check_ensemble_mode(ensemble_mode)
  dtype = precision.check_dtype(compute_dtype, 'compute_dtype')

  def with_targets(batch, teacher_variables):
    logits = teacher_forward(
      precision.compute_variables(teacher_variables, dtype), batch['image'].astype(dtype)
    ).astype(jnp.float32)
    return {
      **batch,
      TEACHER_LOG_PROBS: losses.ensemble_log_probs(logits, temperature, ensemble_mode),
    }

  return with_targets


def make_distillation_loss_and_grads(
  model, alpha, temperature, kd_until_step=None, compute_dtype='float32'
):
  """Like `make_loss_and_grads`, with the KD loss against the batch's 'teacher_log_probs' (added by
  `make_teacher_targets`), computed in float32.

  `kd_until_step` (ESKD, variant b): from that optimizer step on, α = 1 (cross-entropy only).
  """
  losses.check_kd_hyperparameters(alpha, temperature)
  dtype = precision.check_dtype(compute_dtype, 'compute_dtype')

  def loss_fn(params, state, batch):
    logits, batch_stats = _forward_train(model, params, state, batch['image'], dtype)
    weight = alpha if kd_until_step is None else jnp.where(state.step < kd_until_step, alpha, 1.0)
    loss = losses.distillation_loss(
      logits, batch[TEACHER_LOG_PROBS], batch['label'], weight, temperature
    )
    return loss, (logits, batch_stats)

  def loss_and_grads(state, batch):
    return jax.value_and_grad(loss_fn, has_aux=True)(state.params, state, batch)

  return loss_and_grads


def make_kd_loss_and_grads(
  model,
  teacher_forward,
  alpha,
  temperature,
  ensemble_mode='probs',
  kd_until_step=None,
  compute_dtype='float32',
):
  """The KD `loss_and_grads` in one program, teachers included: (state, batch, stacked teacher
  variables) -> as `make_loss_and_grads`. `make_teacher_targets` followed by
  `make_distillation_loss_and_grads`, which the pipeline runs as two programs."""
  add_targets = make_teacher_targets(teacher_forward, temperature, ensemble_mode, compute_dtype)
  student = make_distillation_loss_and_grads(
    model, alpha, temperature, kd_until_step, compute_dtype
  )
  return lambda state, batch, teacher_variables: student(
    state, add_targets(batch, teacher_variables)
  )


def make_train_step(loss_and_grads, axis_name=None):
  """An SGD step for any `loss_and_grads`: (state, batch, *inputs) -> (state, metrics).

  `inputs` are constant per run (e.g. the frozen teacher variables) and passed through.
  """

  def train_step(state, batch, *inputs):
    (loss, (logits, batch_stats)), grads = loss_and_grads(state, batch, *inputs)
    grads, batch_stats = _mean_over_devices((grads, batch_stats), axis_name)
    metrics = _mean_over_devices(
      {'loss': loss, 'accuracy': jnp.mean(jnp.argmax(logits, -1) == batch['label'])}, axis_name
    )
    return state.apply_gradients(grads=grads, batch_stats=batch_stats), metrics

  return train_step


def make_multi_step(train_step):
  """K steps as one call, a `lax.scan` over batches stacked (K, batch, …): (state, batches, *inputs)
  -> (state, metrics summed over the K steps). One host round trip per K steps, not per step."""

  def multi_step(state, batches, *inputs):
    state, metrics = jax.lax.scan(lambda s, batch: train_step(s, batch, *inputs), state, batches)
    return state, jax.tree.map(lambda m: jnp.sum(m, axis=0), metrics)

  return multi_step


def over_runs(step):
  """A step of one run -> the step of S runs stacked on a leading axis (every argument and output).

  On accelerators a `vmap`: the runs fill the device together. On the CPU a compiled loop over the
  runs (`lax.map`): XLA's CPU backend turns vmapped convolutions (a kernel per run) into
  batched-kernel convolutions, far slower than one run after another (benchmarks/RESULTS.md,
  `benchmarks/run.py`). Both compute each run exactly as its own step would.
  """
  if jax.default_backend() != 'cpu':
    return jax.vmap(step)
  return lambda *stacked: jax.lax.map(lambda args: step(*args), stacked)


def model_predict(model):
  """The eval-mode forward of a model: (variables, images) -> logits."""
  return lambda variables, images: model.apply(variables, images, train=False)


def ensemble_predict(teacher_forward, ensemble_mode='probs'):
  """An ensemble's prediction at τ = 1 as log-probabilities (valid logits for the eval step)."""
  return lambda variables, images: losses.ensemble_log_probs(
    teacher_forward(variables, images), 1.0, ensemble_mode
  )


def make_eval_step(predict, axis_name=None):
  """(variables, batch) -> summed loss, correct and count over the real (masked) examples.

  `predict(variables, images) -> logits`, e.g. `model_predict(model)` or `ensemble_predict(...)`.
  """

  def eval_step(variables, batch):
    logits = predict(variables, batch['image'])
    mask = batch['mask'].astype(jnp.float32)
    nll = -jnp.take_along_axis(jax.nn.log_softmax(logits), batch['label'][:, None], -1)[:, 0]
    sums = {
      'loss': jnp.sum(nll * mask),
      'correct': jnp.sum((jnp.argmax(logits, -1) == batch['label']) * mask),
      'count': jnp.sum(mask),
    }
    return jax.lax.psum(sums, axis_name) if axis_name else sums

  return eval_step
