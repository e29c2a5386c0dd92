"""The optimizer equals torch.optim.SGD(nesterov, weight_decay) + MultiStepLR, written in numpy."""

import jax
import ml_collections
import numpy as np
import optax
import pytest

from ckd_jax.recipes import optimizer as optimizer_config
from ckd_jax.training import make_optimizer, make_schedule


def numpy_nesterov_sgd(params, grads_per_step, lrs, momentum, weight_decay):
  """torch's update: g += wd·p; buf = m·buf + g (buf = g at first); p -= lr·(g + m·buf)."""
  params = {k: v.copy() for k, v in params.items()}
  buf = None
  for grads, lr in zip(grads_per_step, lrs):
    g = {k: grads[k] + weight_decay * params[k] for k in params}
    buf = g if buf is None else {k: momentum * buf[k] + g[k] for k in params}
    params = {k: params[k] - lr * (g[k] + momentum * buf[k]) for k in params}
  return params


def test_optimizer_matches_numpy_nesterov_sgd_with_coupled_l2():
  rng = np.random.default_rng(0)
  params = {'w': rng.normal(size=(3, 2)), 'b': rng.normal(size=(2,))}
  steps_per_epoch, epochs = 2, 4
  config = optimizer_config(0.1, milestones=(1, 3), weight_decay=5e-4)
  tx = make_optimizer(config, steps_per_epoch, epochs)
  grads = [{k: rng.normal(size=v.shape) for k, v in params.items()} for _ in range(8)]
  state, current = tx.init(params), params
  for g in grads:
    updates, state = tx.update(g, state, current)
    current = optax.apply_updates(current, updates)
  # Epoch-wise MultiStepLR: epoch 0 at 0.1, epochs 1-2 at 0.01, epoch 3 at 0.001.
  lrs = [0.1] * 2 + [0.01] * 4 + [0.001] * 2
  expected = numpy_nesterov_sgd(params, grads, lrs, 0.9, 5e-4)
  for k in params:
    np.testing.assert_allclose(current[k], expected[k], rtol=1e-6, atol=1e-9)


def test_step_schedule_changes_only_at_epoch_boundaries():
  config = optimizer_config(0.1, milestones=(60, 120, 180))
  schedule = make_schedule(config, steps_per_epoch=391, epochs=200)
  for step, lr in [
    (0, 0.1),
    (60 * 391 - 1, 0.1),
    (60 * 391, 0.01),
    (120 * 391, 0.001),
    (180 * 391 - 1, 0.001),
    (180 * 391, 1e-4),
    (200 * 391 - 1, 1e-4),
  ]:
    assert float(schedule(step)) == pytest.approx(lr, rel=1e-6)


def test_cosine_schedule_goes_from_lr_to_zero():
  config = optimizer_config(0.1, milestones=(), schedule='cosine')
  schedule = make_schedule(config, steps_per_epoch=10, epochs=10)
  assert float(schedule(0)) == pytest.approx(0.1)
  assert float(schedule(50)) == pytest.approx(0.05, rel=1e-5)
  assert float(schedule(100)) == pytest.approx(0.0, abs=1e-8)


@pytest.mark.parametrize(
  'change',
  [
    dict(milestones=(120, 60)),
    dict(milestones=(60, 250)),
    dict(schedule='linear'),
    dict(learning_rate=0.0),
  ],
)
def test_bad_optimizer_configs_are_refused(change):
  config = ml_collections.ConfigDict(optimizer_config(0.1, (60, 120)))
  config.update(change)
  with pytest.raises(ValueError):
    make_optimizer(config, 10, 200)


def test_weight_decay_reaches_batchnorm_parameters_too():
  """torch applies weight_decay to every parameter, so do we (zero grads still shrink weights)."""
  tx = make_optimizer(optimizer_config(1.0, (), weight_decay=0.1, nesterov=False), 1, 2)
  params = {'bn_scale': np.ones(3)}
  updates, _ = tx.update(jax.tree.map(np.zeros_like, params), tx.init(params), params)
  np.testing.assert_allclose(optax.apply_updates(params, updates)['bn_scale'], 0.9)
