"""On-device augmentation (pad-4 random crop + horizontal flip) and normalisation, jittable.

Randomness is drawn in `sample_crop_flip` and applied in `crop_and_flip`, so that the draw can be
checked against a numpy reference pixel by pixel.
"""

import jax
import jax.numpy as jnp


def sample_crop_flip(key, n, padding, flip=True):
  """Per-image crop offsets in [0, 2·padding] and flip decisions."""
  k_y, k_x, k_f = jax.random.split(key, 3)
  dy = jax.random.randint(k_y, (n,), 0, 2 * padding + 1)
  dx = jax.random.randint(k_x, (n,), 0, 2 * padding + 1)
  flips = jax.random.bernoulli(k_f, 0.5, (n,)) if flip else jnp.zeros((n,), bool)
  return dy, dx, flips


def crop_and_flip(images, dy, dx, flips, padding):
  """Zero-pads NHWC images by `padding`, crops back to H×W at (dy, dx), flips left-right."""
  _, h, w, c = images.shape
  padded = jnp.pad(images, ((0, 0), (padding, padding), (padding, padding), (0, 0)))

  def one(image, y, x, f):
    crop = jax.lax.dynamic_slice(image, (y, x, 0), (h, w, c))
    return jnp.where(f, crop[:, ::-1], crop)

  return jax.vmap(one)(padded, dy, dx, flips)


def normalize(images, mean, std):
  """uint8 → float32, per-channel standardised."""
  x = images.astype(jnp.float32) / 255.0
  return (x - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)


def augment(key, images, padding, flip=True):
  dy, dx, flips = sample_crop_flip(key, images.shape[0], padding, flip)
  return crop_and_flip(images, dy, dx, flips, padding)
