"""Losses: pure, jit-compatible, batch means. The public API for programmatic use.

    cross_entropy(logits, labels)           = mean_b −log p(y_b)
    kd_loss(s, t, y, α, τ)                  = α·CE(y, p_s) + (1−α)·τ²·KL(p_t^τ ‖ p_s^τ)
    ensemble_kd_loss(s, t_stack, y, α, τ, mode, weights)
                                            = the same with an ensemble teacher:
        mode='probs'  (the paper's equation):  p_t^τ = Σ_i w_i softmax(t_i / τ)
        mode='logits' (the authors' code):     p_t^τ = softmax((Σ_i w_i t_i) / τ)
    distillation_loss(s, log_p_t, y, α, τ)  = the same with the teacher given as log p_t^τ
with p^τ = softmax(logits / τ), weights w_i ≥ 0 normalised to sum 1 (uniform by default). The KD
term's gradient w.r.t. the student logits is (1−α)·τ·(p_s^τ − p_t^τ) / batch (Hinton et al.'s τ²
scaling). Everything is computed in log space (log-softmax, logsumexp), so no log(0) appears.
"""

import functools

import jax
import jax.numpy as jnp
import optax

ENSEMBLE_MODES = ('probs', 'logits')


def check_kd_hyperparameters(alpha, temperature):
  """Raises ValueError for α outside [0, 1] or τ ≤ 0 (concrete Python numbers only)."""
  if isinstance(alpha, (int, float)) and not 0.0 <= alpha <= 1.0:
    raise ValueError(f'alpha must be in [0, 1], got {alpha}')
  if isinstance(temperature, (int, float)) and not temperature > 0:
    raise ValueError(f'temperature must be > 0, got {temperature}')


def check_ensemble_mode(mode, what='ensemble mode'):
  if mode not in ENSEMBLE_MODES:
    raise ValueError(f'{what} must be one of {ENSEMBLE_MODES}, got {mode!r}')


@jax.jit
def cross_entropy(logits, labels, label_smoothing=0.0):
  """Mean cross-entropy of integer labels; optional label smoothing over all K classes."""
  num_classes = logits.shape[-1]
  targets = optax.smooth_labels(jax.nn.one_hot(labels, num_classes), label_smoothing)
  return jnp.mean(optax.softmax_cross_entropy(logits, targets))


def _kl_from_log_probs(teacher_log_probs, student_log_probs):
  """Per-example KL(p_t ‖ p_s) from log-probabilities."""
  return jnp.sum(jnp.exp(teacher_log_probs) * (teacher_log_probs - student_log_probs), axis=-1)


def distillation_loss(student_logits, teacher_log_probs, labels, alpha, temperature):
  """α·CE(y, p_s) + (1−α)·τ²·KL(p_t^τ ‖ p_s^τ) with the teacher given as log p_t^τ (B, K), e.g. from
  `ensemble_log_probs`: the loss of a student step whose teacher ran in a program of its own."""
  student_log_probs = jax.nn.log_softmax(student_logits / temperature)
  kd = jnp.mean(_kl_from_log_probs(teacher_log_probs, student_log_probs))
  return alpha * cross_entropy(student_logits, labels) + (1.0 - alpha) * temperature**2 * kd


@jax.jit
def _kd_loss(student_logits, teacher_logits, labels, alpha, temperature):
  teacher_log_probs = jax.nn.log_softmax(teacher_logits / temperature)
  return distillation_loss(student_logits, teacher_log_probs, labels, alpha, temperature)


def kd_loss(
  student_logits: jax.Array,
  teacher_logits: jax.Array,
  labels: jax.Array,
  alpha: float = 0.5,
  temperature: float = 5.0,
) -> jax.Array:
  """Hinton KD: α·CE(y, p_s) + (1−α)·τ²·KL(p_t^τ ‖ p_s^τ), batch mean. Teacher gets no gradient.

  Args:
    student_logits, teacher_logits: (B, K) logits.
    labels: (B,) integer labels.
    alpha: the weight of the cross-entropy with the labels, in [0, 1] (the paper: 0.5).
    temperature: τ > 0 of both softmaxes (the paper: 5).
  Returns:
    The scalar loss (jit-compatible; raises ValueError for α or τ out of range).
  """
  check_kd_hyperparameters(alpha, temperature)
  return _kd_loss(student_logits, jax.lax.stop_gradient(teacher_logits), labels, alpha, temperature)


def ensemble_log_probs(teacher_logits_stack, temperature, mode='probs', weights=None):
  """log p_t^τ of an ensemble whose members' logits are stacked on axis 0: (M, B, K) -> (B, K)."""
  check_ensemble_mode(mode)
  members = teacher_logits_stack.shape[0]
  if members == 0:
    raise ValueError('an ensemble needs at least one teacher')
  weights = (
    jnp.full((members,), 1.0 / members)
    if weights is None
    else (jnp.asarray(weights, jnp.float32) / jnp.sum(jnp.asarray(weights, jnp.float32)))
  )
  if mode == 'logits':
    mean_logits = jnp.tensordot(weights, teacher_logits_stack, axes=1)
    return jax.nn.log_softmax(mean_logits / temperature)
  member_log_probs = jax.nn.log_softmax(teacher_logits_stack / temperature)
  return jax.nn.logsumexp(member_log_probs, axis=0, b=weights[:, None, None])


@functools.partial(jax.jit, static_argnames=('mode',))
def _ensemble_kd_loss(
  student_logits, teacher_logits_stack, labels, alpha, temperature, mode, weights
):
  teacher_log_probs = ensemble_log_probs(teacher_logits_stack, temperature, mode, weights)
  return distillation_loss(student_logits, teacher_log_probs, labels, alpha, temperature)


def ensemble_kd_loss(
  student_logits: jax.Array,
  teacher_logits_stack: jax.Array,
  labels: jax.Array,
  alpha: float = 0.5,
  temperature: float = 5.0,
  mode: str = 'probs',
  weights=None,
) -> jax.Array:
  """KD from an ensemble (see the module docstring).

  Args:
    student_logits: (B, K); teacher_logits_stack: (M, B, K), the members' logits; labels: (B,).
    alpha, temperature: as in `kd_loss`.
    mode: 'probs' (the paper: average the members' softened probabilities) or 'logits' (the
      authors' code: average the logits before the softmax).
    weights: optional (M,) member weights (default: equal).
  Returns:
    The scalar loss.
  """
  check_kd_hyperparameters(alpha, temperature)
  check_ensemble_mode(mode)
  if teacher_logits_stack.ndim != 3 or teacher_logits_stack.shape[0] == 0:
    raise ValueError(
      'teacher_logits_stack must be (M >= 1, batch, classes), got shape '
      f'{teacher_logits_stack.shape}'
    )
  if weights is not None and len(weights) != teacher_logits_stack.shape[0]:
    raise ValueError(f'{len(weights)} weights for {teacher_logits_stack.shape[0]} teachers')
  return _ensemble_kd_loss(
    student_logits,
    jax.lax.stop_gradient(teacher_logits_stack),
    labels,
    alpha,
    temperature,
    mode,
    weights,
  )
