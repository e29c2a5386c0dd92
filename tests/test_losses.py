"""KD losses against an independent numpy reference, and their defining properties."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ckd_jax import losses


def np_softmax(z):
  e = np.exp(z - z.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def np_kd(student, teacher_probs, labels, alpha, tau):
  """Reference in float64: α·CE + (1−α)·τ²·KL(p_t ‖ p_s^τ), batch mean."""
  ps = np_softmax(student)
  ce = -np.log(ps[np.arange(len(labels)), labels]).mean()
  ps_tau = np_softmax(student / tau)
  kl = (teacher_probs * (np.log(teacher_probs) - np.log(ps_tau))).sum(-1).mean()
  return alpha * ce + (1 - alpha) * tau**2 * kl


def _random(seed, members=None, batch=6, classes=7):
  rng = np.random.default_rng(seed)
  student = rng.normal(size=(batch, classes)) * 3
  shape = (batch, classes) if members is None else (members, batch, classes)
  teacher = rng.normal(size=shape) * 3
  return student, teacher, rng.integers(0, classes, batch)


@pytest.mark.parametrize('alpha,tau', [(0.5, 5.0), (0.1, 4.0), (0.9, 1.0), (0.0, 2.0), (1.0, 3.0)])
def test_kd_loss_matches_numpy(alpha, tau):
  student, teacher, labels = _random(0)
  got = losses.kd_loss(
    jnp.asarray(student, jnp.float32), jnp.asarray(teacher, jnp.float32), labels, alpha, tau
  )
  np.testing.assert_allclose(
    got, np_kd(student, np_softmax(teacher / tau), labels, alpha, tau), rtol=1e-5, atol=1e-6
  )


@pytest.mark.parametrize('members', [1, 3, 5])
@pytest.mark.parametrize('tau', [1.0, 4.0])
def test_ensemble_kd_loss_matches_numpy_in_both_modes(members, tau):
  student, teachers, labels = _random(members, members)
  weights = np.random.default_rng(9).uniform(0.5, 2.0, members)
  w = weights / weights.sum()
  probs_teacher = np.einsum('m,mbk->bk', w, np_softmax(teachers / tau))
  logits_teacher = np_softmax(np.einsum('m,mbk->bk', w, teachers) / tau)
  args = (jnp.asarray(student, jnp.float32), jnp.asarray(teachers, jnp.float32), labels, 0.3, tau)
  np.testing.assert_allclose(
    losses.ensemble_kd_loss(*args, mode='probs', weights=weights),
    np_kd(student, probs_teacher, labels, 0.3, tau),
    rtol=1e-5,
    atol=1e-6,
  )
  np.testing.assert_allclose(
    losses.ensemble_kd_loss(*args, mode='logits', weights=weights),
    np_kd(student, logits_teacher, labels, 0.3, tau),
    rtol=1e-5,
    atol=1e-6,
  )
  uniform = np.einsum('mbk->bk', np_softmax(teachers / tau)) / members
  np.testing.assert_allclose(
    losses.ensemble_kd_loss(*args), np_kd(student, uniform, labels, 0.3, tau), rtol=1e-5, atol=1e-6
  )


def test_kd_term_is_zero_when_student_equals_teacher():
  student, _, labels = _random(1)
  s = jnp.asarray(student, jnp.float32)
  assert abs(float(losses.kd_loss(s, s, labels, alpha=0.0, temperature=4.0))) < 1e-5
  np.testing.assert_allclose(
    losses.kd_loss(s, s, labels, alpha=0.5, temperature=4.0),
    0.5 * losses.cross_entropy(s, labels),
    rtol=1e-5,
  )


@pytest.mark.parametrize('alpha,tau', [(0.5, 5.0), (0.2, 2.0)])
def test_kd_gradient_is_tau_times_probability_difference(alpha, tau):
  student, teacher, labels = _random(2)
  s, t = jnp.asarray(student, jnp.float32), jnp.asarray(teacher, jnp.float32)
  kd_only = jax.grad(
    lambda x: losses.kd_loss(x, t, labels, alpha, tau) - alpha * losses.cross_entropy(x, labels)
  )(s)
  expected = tau * (np_softmax(student / tau) - np_softmax(teacher / tau)) * (1 - alpha) / 6
  np.testing.assert_allclose(kd_only, expected, rtol=1e-4, atol=1e-6)
  assert not np.any(jax.grad(lambda t_: losses.kd_loss(s, t_, labels, alpha, tau))(t))


def test_modes_coincide_for_one_teacher_and_equal_kd_loss():
  student, teacher, labels = _random(3)
  s, t = jnp.asarray(student, jnp.float32), jnp.asarray(teacher, jnp.float32)
  probs = losses.ensemble_kd_loss(s, t[None], labels, 0.5, 4.0, mode='probs')
  logits = losses.ensemble_kd_loss(s, t[None], labels, 0.5, 4.0, mode='logits')
  np.testing.assert_allclose(probs, logits, rtol=1e-6)
  np.testing.assert_allclose(probs, losses.kd_loss(s, t, labels, 0.5, 4.0), rtol=1e-6)


def test_extreme_logits_stay_finite():
  s = jnp.array([[1000.0, -1000.0, 0.0]])
  t = jnp.array([[[-1000.0, 1000.0, 0.0]], [[1000.0, 0.0, -1000.0]]])
  for mode in losses.ENSEMBLE_MODES:
    value, grad = jax.value_and_grad(
      lambda x: losses.ensemble_kd_loss(x, t, jnp.array([0]), 0.5, 1.0, mode=mode)
    )(s)
    assert np.isfinite(value) and np.all(np.isfinite(grad))


class JitTest(chex.TestCase):
  @chex.variants(with_jit=True, without_jit=True)
  def test_losses_compose_with_jit(self):
    """Inside a user's jit (α traced) and outside, against the float64 numpy reference."""
    student, teachers, labels = _random(4, 2)
    s, t = jnp.asarray(student, jnp.float32), jnp.asarray(teachers, jnp.float32)
    fn = self.variant(lambda a, b, c, alpha: losses.ensemble_kd_loss(a, b, c, alpha, 4.0))
    teacher_probs = np_softmax(teachers / 4.0).mean(0)
    np.testing.assert_allclose(
      fn(s, t, labels, 0.5), np_kd(student, teacher_probs, labels, 0.5, 4.0), rtol=1e-5, atol=1e-6
    )


@pytest.mark.parametrize(
  'kwargs,message',
  [
    (dict(alpha=1.5), 'alpha'),
    (dict(alpha=-0.1), 'alpha'),
    (dict(temperature=0.0), 'temperature'),
    (dict(mode='median'), 'mode'),
    (dict(weights=[1.0]), 'weights'),
  ],
)
def test_bad_hyperparameters_are_refused(kwargs, message):
  student, teachers, labels = _random(5, 2)
  with pytest.raises(ValueError, match=message):
    losses.ensemble_kd_loss(jnp.asarray(student), jnp.asarray(teachers), labels, **kwargs)


def test_empty_ensemble_is_refused():
  with pytest.raises(ValueError, match='M >= 1'):
    losses.ensemble_kd_loss(jnp.zeros((2, 3)), jnp.zeros((0, 2, 3)), jnp.array([0, 1]))
