"""Binning estimator (Shwartz-Ziv & Tishby): quantise every unit into B bins, count patterns.

    I(X;T) = H(T_bin)                 (T is a deterministic function of X)
    I(Y;T) = H(T_bin) − Σ_c p_c H(T_bin | Y = c)
Patterns are hashed to two 32-bit words and counted by sorting, so the estimator has static shapes
and runs under jit and vmap. Degenerate for wide ReLU features (almost every pattern is unique, so
I(X;T) → log N); kept as a reference. Units: nats.
"""

import jax
import jax.numpy as jnp
import numpy as np

# numpy, not jnp: a jnp constant at import would start JAX's backends before jax.distributed
_MULTIPLIERS = (np.uint32(0x9E3779B1), np.uint32(0x85EBCA77))


def _bin(features, num_bins):
  """Equal-width bins between each unit's min and max over the samples."""
  low, high = features.min(0), features.max(0)
  width = jnp.where(high > low, (high - low) / num_bins, 1.0)
  return jnp.clip(jnp.floor((features - low) / width), 0, num_bins - 1).astype(jnp.uint32)


def _hash(codes, multiplier):
  def step(h, column):
    return (h ^ column) * multiplier + jnp.uint32(0x7F4A7C15), None

  return jax.lax.scan(step, jnp.full(codes.shape[0], 0x811C9DC5, jnp.uint32), codes.T)[0]


def _group_sizes(keys):
  """For every row, how many rows share all its `keys` (first key most significant)."""
  n = keys[0].shape[0]
  order = jnp.lexsort(tuple(reversed(keys)))
  sorted_keys = jnp.stack([k[order] for k in keys])
  starts = jnp.ones(n, bool).at[1:].set(jnp.any(sorted_keys[:, 1:] != sorted_keys[:, :-1], 0))
  group = jnp.cumsum(starts) - 1
  counts = jax.ops.segment_sum(jnp.ones(n), group, num_segments=n)
  return jnp.zeros(n).at[order].set(counts[group])


def binning_mi(features, labels, num_classes, num_bins=30):
  """{'I_XF', 'I_YF'} of features (N, d) and integer labels (N,); jittable, vmappable.

  With n(t) the count of row i's pattern and n(t, y) of its (pattern, class):
  H(T) = −mean_i log(n(t_i)/N) and H(T|Y) = −mean_i log(n(t_i, y_i)/N_{y_i}).
  """
  n = features.shape[0]
  codes = _bin(features, num_bins)
  h1, h2 = (_hash(codes, m) for m in _MULTIPLIERS)
  labels = labels.astype(jnp.int32)
  h_t = -jnp.mean(jnp.log(_group_sizes([h1, h2]) / n))
  class_sizes = jnp.bincount(labels, length=num_classes)[labels]
  h_t_given_y = -jnp.mean(jnp.log(_group_sizes([labels.astype(jnp.uint32), h1, h2]) / class_sizes))
  return {'I_XF': h_t, 'I_YF': h_t - h_t_given_y}
