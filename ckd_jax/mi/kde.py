"""Pairwise-distance (Kolchinsky & Tracey) bound on MI through a Gaussian-noise channel.

Following Saxe et al. (2018): treat the feature as T = F + N(0, σ²I). The entropy of the resulting
Gaussian mixture is bounded by H(T) ≤ −(1/N)Σ_i log[(1/N)Σ_j exp(−‖f_i−f_j‖²/(2σ²))] + H(noise), and
since H(T|X) = H(noise):
    I(X;T) = −(1/N) Σ_i log[(1/N) Σ_j k_ij]                  (≤ log N)
    I(Y;T) = (1/N) Σ_i log[(1/N_{y_i}) Σ_{j: y_j = y_i} k_ij] + I(X;T)
with k_ij = exp(−‖f_i−f_j‖²/(2σ²)). Rows are processed in chunks, so N = 10,000 needs chunk·N floats.
Units: nats.
"""
import jax
import jax.numpy as jnp


def _row_terms(features, labels, rows, row_labels, noise_variance, num_classes):
  """log[(1/N)Σ_j k_ij] and log[(1/N_y)Σ_{j∈y} k_ij] for a chunk of rows."""
  sq = (jnp.sum(rows**2, -1)[:, None] + jnp.sum(features**2, -1)[None, :]
        - 2.0 * rows @ features.T)
  log_k = -jnp.maximum(sq, 0.0) / (2.0 * noise_variance)
  n = features.shape[0]
  all_term = jax.nn.logsumexp(log_k, axis=1) - jnp.log(n)
  same = row_labels[:, None] == labels[None, :]
  class_counts = jnp.bincount(labels, length=num_classes)
  class_term = (jax.nn.logsumexp(jnp.where(same, log_k, -jnp.inf), axis=1)
                - jnp.log(class_counts[row_labels]))
  return all_term, class_term


def kde_mi(features, labels, num_classes, noise_variance=0.1, chunk_size=1024):
  """{'I_XF', 'I_YF'} of features (N, d) and integer labels (N,); jittable, vmappable."""
  n = features.shape[0]
  chunk = min(chunk_size, n)
  pad = (-n) % chunk
  rows = jnp.pad(features, ((0, pad), (0, 0))).reshape(-1, chunk, features.shape[1])
  row_labels = jnp.pad(labels, (0, pad)).reshape(-1, chunk)
  all_terms, class_terms = jax.lax.map(
      lambda args: _row_terms(features, labels, args[0], args[1], noise_variance, num_classes),
      (rows, row_labels))
  all_terms, class_terms = all_terms.reshape(-1)[:n], class_terms.reshape(-1)[:n]
  i_xf = -jnp.mean(all_terms)
  return {'I_XF': i_xf, 'I_YF': jnp.mean(class_terms) + i_xf}
