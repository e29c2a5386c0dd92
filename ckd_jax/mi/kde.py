"""Pairwise-distance (Kolchinsky & Tracey) bound on MI through a Gaussian-noise channel.

Following Saxe et al. (2018): treat the feature as T = F + N(0, σ²I). The entropy of the resulting
Gaussian mixture is bounded by H(T) ≤ −(1/N)Σ_i log[(1/N)Σ_j exp(−‖f_i−f_j‖²/(2σ²))] + H(noise), and
since H(T|X) = H(noise):
    I(X;T) = −(1/N) Σ_i log[(1/N) Σ_j k_ij]                  (≤ log N)
    I(Y;T) = (1/N) Σ_i log[(1/N_{y_i}) Σ_{j: y_j = y_i} k_ij] + I(X;T)
with k_ij = exp(−‖f_i−f_j‖²/(2σ²)). Rows are processed in chunks, so N = 10,000 needs chunk·N
floats. The diagonal k_ii = 1 is set exactly (the ‖a‖² + ‖b‖² − 2a·b form leaves float error there),
so the bound log N holds in float32 too. Units: nats.

The noise variance decides everything. A fixed σ² fails on real features: pooled ResNet features
have squared distances of ~200, so σ² = 0.1 leaves every kernel with only its own sample, and then
I(X;T) = log N and I(Y;T) = H(Y) for every snapshot, whatever the features. A fraction of the mean
squared distance fails too, because distances concentrate in high dimension. `noise_variance='auto'`
(the default) therefore sets σ² per snapshot to the median, over samples, of the squared distance to
the k-th nearest other sample, k = ⌈N / (2K)⌉ (half an average class): each kernel then spans about
half a class of neighbours, so a sample's own kernel does not dominate (label-independent features
give I(Y;T) ≈ 0), while well-separated classes stay apart (I(Y;T) ≈ ln K); it is invariant to the
scale of the features and adapts to their dimension. A number gives a fixed, absolute σ².
"""

import math

import jax
import jax.numpy as jnp


def _squared_distances(rows, row_index, features):
  """‖r − f_j‖² for a chunk of rows (their global indices in `row_index`), diagonal exactly 0."""
  sq = jnp.sum(rows**2, -1)[:, None] + jnp.sum(features**2, -1)[None, :] - 2.0 * rows @ features.T
  self_pair = row_index[:, None] == jnp.arange(features.shape[0])[None, :]
  return jnp.where(self_pair, 0.0, jnp.maximum(sq, 0.0)), self_pair


def _chunked(fn, features, labels, chunk_size):
  """Maps `fn(rows, row_index, row_labels)` over row chunks; results cut back to N rows."""
  n = features.shape[0]
  chunk = min(chunk_size, n)
  pad = (-n) % chunk
  rows = jnp.pad(features, ((0, pad), (0, 0))).reshape(-1, chunk, features.shape[1])
  index = jnp.pad(jnp.arange(n), (0, pad), constant_values=-1).reshape(-1, chunk)
  row_labels = jnp.pad(labels, (0, pad)).reshape(-1, chunk)
  out = jax.lax.map(lambda a: fn(*a), (rows, index, row_labels))
  return jax.tree.map(lambda x: x.reshape(-1)[:n], out)


def _kth_smallest(sq, k, iterations=30):
  """Per row, the k-th smallest entry of `sq` (≥ 0) by bisection on a threshold: only compares
  and sums, which XLA runs far faster than the sort behind top_k on CPUs."""

  def halve(bounds, _):
    low, high = bounds
    mid = 0.5 * (low + high)
    enough = jnp.sum(sq <= mid[:, None], axis=1) >= k
    return (jnp.where(enough, low, mid), jnp.where(enough, mid, high)), None

  finite = jnp.where(jnp.isfinite(sq), sq, 0.0)
  bounds = (jnp.zeros(sq.shape[0]), jnp.max(finite, axis=1))
  return jax.lax.scan(halve, bounds, None, length=iterations)[0][1]


def auto_noise_variance(features, num_classes, chunk_size=1024):
  """The median squared distance to the ⌈N/(2K)⌉-th nearest other sample (see the module doc)."""
  n = features.shape[0]
  k = min(max(1, math.ceil(n / (2 * num_classes))), n - 1)

  def kth_nearest(rows, row_index, row_labels):
    del row_labels
    sq, self_pair = _squared_distances(rows, row_index, features)
    return _kth_smallest(jnp.where(self_pair, jnp.inf, sq), k)

  variance = jnp.median(_chunked(kth_nearest, features, jnp.zeros(n, jnp.int32), chunk_size))
  return jnp.where(variance > 0, variance, 1.0)  # all samples equal: any σ² gives I = 0


def kde_mi(features, labels, num_classes, noise_variance='auto', chunk_size=1024):
  """{'I_XF', 'I_YF', 'noise_variance'} of features (N, d) and integer labels (N,); jittable,
  vmappable. `noise_variance`: 'auto' (scale-aware, per call) or a fixed σ² > 0."""
  if noise_variance == 'auto':
    noise_variance = auto_noise_variance(features, num_classes, chunk_size)
  elif isinstance(noise_variance, str):  # a command-line override arrives as text
    try:
      noise_variance = float(noise_variance)
    except ValueError:
      raise ValueError(
        f"noise_variance must be 'auto' or a number, got {noise_variance!r}"
      ) from None
  noise_variance = jnp.asarray(noise_variance, jnp.float32)
  n = features.shape[0]
  class_counts = jnp.bincount(labels, length=num_classes)

  def row_terms(rows, row_index, row_labels):
    """log Σ_j k_ij (≥ 0: k_ii = 1) and log[(1/N_y)Σ_{j∈y} k_ij] for a chunk of rows."""
    sq, _ = _squared_distances(rows, row_index, features)
    log_k = -sq / (2.0 * noise_variance)
    same = row_labels[:, None] == labels[None, :]
    return (
      jax.nn.logsumexp(log_k, axis=1),
      jax.nn.logsumexp(jnp.where(same, log_k, -jnp.inf), axis=1)
      - jnp.log(class_counts[row_labels]),
    )

  all_terms, class_terms = _chunked(row_terms, features, labels, chunk_size)
  i_xf = jnp.log(n) - jnp.mean(all_terms)  # a mean of non-negative terms: ≤ log N in floats too
  return {'I_XF': i_xf, 'I_YF': jnp.mean(class_terms) + i_xf, 'noise_variance': noise_variance}
