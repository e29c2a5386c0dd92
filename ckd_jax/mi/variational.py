"""Variational bounds in the spirit of InfoPro (Wang et al., ICLR 2021), trained for a fixed budget.

    I(Y;F) ≥ ln K − E[−log q(y|f)]     q: a linear softmax probe on F
    I(X;F) ≥ H(X) − E[−log q(x|f)]     q: N(g(f), σ²I) with g a one-hidden-layer MLP decoder
H(X) of continuous images is not defined, so the X term is reported relative to a decoder that ignores
F (it predicts the mean training image): I_XF = (E‖x − x̄‖² − E‖x − g(f)‖²) / (2σ²). The unknown
constant cancels in the min-max normalisation across snapshots, which is all the selection uses.
Probes and decoders are fitted on the training split and evaluated on held-out data; every snapshot
gets the same initialisation, minibatches and budget, so snapshots are comparable. Units: nats.
"""
import math

import jax
import jax.numpy as jnp
import optax


def _standardize(train, test):
  mean, std = train.mean(0), train.std(0) + 1e-6
  return (train - mean) / std, (test - mean) / std


def _fit(loss_fn, params, key, num_examples, steps, batch_size, learning_rate):
  """Adam on minibatches drawn from `key`: identical draws for every snapshot."""
  tx = optax.adam(learning_rate)

  def step(carry, i):
    params, opt_state = carry
    idx = jax.random.randint(jax.random.fold_in(key, i), (batch_size,), 0, num_examples)
    grads = jax.grad(loss_fn)(params, idx)
    updates, opt_state = tx.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), opt_state), None

  (params, _), _ = jax.lax.scan(step, (params, tx.init(params)), jnp.arange(steps))
  return params


def probe_bound(train_f, train_y, test_f, test_y, num_classes, key, steps=300, batch_size=256,
                learning_rate=1e-2):
  """ln K − held-out cross-entropy of a linear probe."""
  train_f, test_f = _standardize(train_f, test_f)
  d = train_f.shape[1]
  params = {'w': jnp.zeros((d, num_classes)), 'b': jnp.zeros(num_classes)}

  def nll(params, f, y):
    logits = f @ params['w'] + params['b']
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], 1))

  params = _fit(lambda p, idx: nll(p, train_f[idx], train_y[idx]), params, key,
                train_f.shape[0], steps, batch_size, learning_rate)
  return math.log(num_classes) - nll(params, test_f, test_y)


def decoder_bound(train_f, train_x, test_f, test_x, key, hidden=256, steps=300, batch_size=256,
                  learning_rate=1e-3, pixel_noise_std=0.1):
  """(E‖x − x̄‖² − E‖x − g(f)‖²) / (2σ²) on held-out data; x flattened, in [0, 1]."""
  train_f, test_f = _standardize(train_f, test_f)
  d, pixels = train_f.shape[1], train_x.shape[1]
  k1, k2 = jax.random.split(key)
  params = {'w1': jax.random.normal(k1, (d, hidden)) * jnp.sqrt(2.0 / d), 'b1': jnp.zeros(hidden),
            'w2': jax.random.normal(k2, (hidden, pixels)) * jnp.sqrt(1.0 / hidden),
            'b2': train_x.mean(0)}

  def squared_error(params, f, x):
    recon = jax.nn.relu(f @ params['w1'] + params['b1']) @ params['w2'] + params['b2']
    return jnp.mean(jnp.sum((x - recon)**2, axis=1))

  params = _fit(lambda p, idx: squared_error(p, train_f[idx], train_x[idx]), params,
                jax.random.fold_in(key, 1), train_f.shape[0], steps, batch_size, learning_rate)
  baseline = jnp.mean(jnp.sum((test_x - train_x.mean(0))**2, axis=1))
  return (baseline - squared_error(params, test_f, test_x)) / (2.0 * pixel_noise_std**2)


def variational_mi(train_f, train_y, test_f, test_y, num_classes, train_x=None, test_x=None, *,
                   seed=0, probe=None, decoder=None):
  """{'I_XF', 'I_YF'} for one snapshot; I_XF is NaN when no images are given."""
  key = jax.random.key(seed)
  i_yf = probe_bound(train_f, train_y, test_f, test_y, num_classes, key, **(probe or {}))
  if train_x is None:
    return {'I_XF': jnp.full((), jnp.nan), 'I_YF': i_yf}
  i_xf = decoder_bound(train_f, train_x, test_f, test_x, jax.random.fold_in(key, 2),
                       **(decoder or {}))
  return {'I_XF': i_xf, 'I_YF': i_yf}
