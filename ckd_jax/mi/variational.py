"""Variational bounds in the spirit of InfoPro (Wang et al., ICLR 2021), trained for a fixed budget.

    I(Y;F) ≥ H(Y) − E[−log q(y|f)]     q: a linear softmax probe on F, early-stopped
    I(X;F) ≥ H(X) − E[−log q(x|f)]     q: N(g(f), σ²I) with g a one-hidden-layer MLP decoder
H(X) of continuous images is not defined, so the X term is reported relative to a decoder that
ignores F (it predicts the mean training image): I_XF = (E‖x − x̄‖² − E‖x − g(f)‖²) / (2σ²). The
unknown constant cancels in the min-max normalisation across snapshots, which is all the selection
uses. Probes and decoders are fitted on the training split and evaluated on held-out data; every
snapshot gets the same initialisation, minibatches and budget, so snapshots are comparable. Units:
nats.
"""

import jax
import jax.numpy as jnp
import optax


def _standardize(train, test):
  mean, std = train.mean(0), train.std(0) + 1e-6
  return (train - mean) / std, (test - mean) / std


def init_decoder(key, inputs, hidden, output_bias):
  """A one-hidden-layer ReLU MLP decoder (He-initialised), its output bias `output_bias` (the
  prediction of a decoder that ignores its input: the mean image, or its logits)."""
  k1, k2 = jax.random.split(key)
  return {
    'w1': jax.random.normal(k1, (inputs, hidden)) * jnp.sqrt(2.0 / inputs),
    'b1': jnp.zeros(hidden),
    'w2': jax.random.normal(k2, (hidden, output_bias.shape[-1])) * jnp.sqrt(1.0 / hidden),
    'b2': output_bias,
  }


def decode(params, features):
  return jax.nn.relu(features @ params['w1'] + params['b1']) @ params['w2'] + params['b2']


def fit_adam(loss_fn, params, key, num_examples, steps, batch_size, learning_rate, keep_best=None):
  """Adam on minibatches drawn from `key`: identical draws for every snapshot. `keep_best`:
  (held-out loss of the parameters, every): the parameters checked every `every` steps (and the
  initial ones) with the lowest held-out loss are returned instead of the last."""
  tx = optax.adam(learning_rate)
  check, every = keep_best or (None, 0)

  def step(carry, i):
    params, opt_state, best, best_loss = carry
    idx = jax.random.randint(jax.random.fold_in(key, i), (batch_size,), 0, num_examples)
    grads = jax.grad(loss_fn)(params, idx)
    updates, opt_state = tx.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    if check is not None:
      loss = jax.lax.cond((i + 1) % every == 0, check, lambda p: jnp.inf, params)
      better = loss < best_loss
      best = jax.tree.map(lambda new, old: jnp.where(better, new, old), params, best)
      best_loss = jnp.minimum(loss, best_loss)
    return (params, opt_state, best, best_loss), None

  start_loss = check(params) if check is not None else jnp.inf
  (params, _, best, _), _ = jax.lax.scan(
    step, (params, tx.init(params), params, start_loss), jnp.arange(steps)
  )
  return best if check is not None else params


def probe_bound(
  train_f,
  train_y,
  test_f,
  test_y,
  num_classes,
  key,
  steps=300,
  batch_size=256,
  learning_rate=1e-2,
  holdout=0.2,
  checks=10,
):
  """I(Y;F) ≥ H(Y) − E[−log q(y|f)] on held-out data, with H(Y) estimated by the cross-entropy of
  the label prior: how much better than the prior a linear probe predicts held-out labels.

  The probe starts as the prior (zero weights, log-prior bias) and is early-stopped: the last
  `holdout` of the fitting samples are held out, checked `checks` times over the budget, and the
  parameters with the lowest held-out loss are kept, the prior included. So a probe that only
  memorises its fitting samples scores about 0, not below (a probe trained to the end did worse
  than the prior on features that a teacher had memorised).
  """
  n_hold = max(1, int(round(holdout * train_f.shape[0])))
  train_f, test_f = _standardize(train_f, test_f)
  fit_f, fit_y = train_f[:-n_hold], train_y[:-n_hold]
  hold_f, hold_y = train_f[-n_hold:], train_y[-n_hold:]
  counts = jnp.zeros(num_classes).at[fit_y].add(1.0)
  log_prior = jnp.log((counts + 1.0) / (counts.sum() + num_classes))  # (add-one: no -inf)
  params = {'w': jnp.zeros((train_f.shape[1], num_classes)), 'b': log_prior}

  def nll(params, f, y):
    logits = f @ params['w'] + params['b']
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], 1))

  params = fit_adam(
    lambda p, idx: nll(p, fit_f[idx], fit_y[idx]),
    params,
    key,
    fit_f.shape[0],
    steps,
    batch_size,
    learning_rate,
    keep_best=(lambda p: nll(p, hold_f, hold_y), max(1, steps // checks)),
  )
  prior = {'w': jnp.zeros_like(params['w']), 'b': log_prior}
  return nll(prior, test_f, test_y) - nll(params, test_f, test_y)


def decoder_bound(
  train_f,
  train_x,
  test_f,
  test_x,
  key,
  hidden=256,
  steps=300,
  batch_size=256,
  learning_rate=1e-3,
  pixel_noise_std=0.1,
):
  """(E‖x − x̄‖² − E‖x − g(f)‖²) / (2σ²) on held-out data; x flattened, in [0, 1]."""
  train_f, test_f = _standardize(train_f, test_f)
  d = train_f.shape[1]
  params = init_decoder(key, d, hidden, train_x.mean(0))

  def squared_error(params, f, x):
    recon = decode(params, f)
    return jnp.mean(jnp.sum((x - recon) ** 2, axis=1))

  params = fit_adam(
    lambda p, idx: squared_error(p, train_f[idx], train_x[idx]),
    params,
    jax.random.fold_in(key, 1),
    train_f.shape[0],
    steps,
    batch_size,
    learning_rate,
  )
  baseline = jnp.mean(jnp.sum((test_x - train_x.mean(0)) ** 2, axis=1))
  return (baseline - squared_error(params, test_f, test_x)) / (2.0 * pixel_noise_std**2)


def variational_mi(
  train_f,
  train_y,
  test_f,
  test_y,
  num_classes,
  train_x=None,
  test_x=None,
  *,
  seed=0,
  probe=None,
  decoder=None,
):
  """{'I_XF', 'I_YF'} for one snapshot; I_XF is NaN when no images are given."""
  key = jax.random.key(seed)
  i_yf = probe_bound(train_f, train_y, test_f, test_y, num_classes, key, **(probe or {}))
  if train_x is None:
    return {'I_XF': jnp.full((), jnp.nan), 'I_YF': i_yf}
  i_xf = decoder_bound(
    train_f, train_x, test_f, test_x, jax.random.fold_in(key, 2), **(decoder or {})
  )
  return {'I_XF': i_xf, 'I_YF': i_yf}
