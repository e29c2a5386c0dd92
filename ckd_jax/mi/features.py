"""Features of every snapshot at once: one compiled forward over the stacked parameters.

The snapshots run in one compiled loop (`lax.map`; a `vmap` over stacked conv kernels is slower on
the CPU, see `training.steps.make_teacher_forward`). The data is processed in chunks (a Python
loop over data, never over snapshots); every chunk runs the same compiled program.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from ckd_jax.data.augment import normalize

# penultimate: the pooled vector F (d,); logits (K,); spatial: the last map before pooling (h, w,
# c).
FEATURES = ('penultimate', 'logits', 'spatial')
_RETURNS = {'penultimate': True, 'logits': True, 'spatial': 'spatial'}


@functools.partial(jax.jit, static_argnames=('model', 'feature', 'mean', 'std'))
def _features_of_chunk(stacked_variables, images, *, model, feature, mean, std):
  x = normalize(images, mean, std)

  def one(variables):
    logits, features = model.apply(variables, x, train=False, return_features=_RETURNS[feature])
    return logits if feature == 'logits' else features

  return jax.lax.map(one, stacked_variables)


def extract_features(
  model, stacked_variables, images, mean, std, feature='penultimate', batch_size=500
):
  """(S, N, d) features of S stacked snapshots on uint8 `images` (N, H, W, C); (S, N, h, w, c)
  for 'spatial'."""
  if feature not in FEATURES:
    raise ValueError(f'feature must be one of {FEATURES}, got {feature!r}')
  n = images.shape[0]
  chunks = []
  for start in range(0, n, batch_size):
    chunk = images[start : start + batch_size]
    real = chunk.shape[0]
    if real < batch_size:  # pad so that every chunk has the same shape: one compilation
      chunk = np.concatenate([chunk, np.zeros((batch_size - real,) + chunk.shape[1:], chunk.dtype)])
    out = _features_of_chunk(
      stacked_variables,
      jnp.asarray(chunk),
      model=model,
      feature=feature,
      mean=tuple(mean),
      std=tuple(std),
    )
    chunks.append(out[:, :real])
  return jnp.concatenate(chunks, axis=1)
