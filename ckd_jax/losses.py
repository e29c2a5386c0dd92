"""Losses: pure, jit-compatible, batch-mean. (KD losses arrive with the distillation stage.)"""
import jax
import jax.numpy as jnp
import optax


@jax.jit
def cross_entropy(logits, labels, label_smoothing=0.0):
  """Mean cross-entropy of integer labels; optional label smoothing over all K classes."""
  num_classes = logits.shape[-1]
  targets = optax.smooth_labels(jax.nn.one_hot(labels, num_classes), label_smoothing)
  return jnp.mean(optax.softmax_cross_entropy(logits, targets))
