"""InfoPro-style estimates (Wang et al., ICLR 2021, the same lab as the checkpoint-KD paper):
I(X;F) from how well a decoder reconstructs the image from the spatial feature map, under a
binary cross-entropy (pixels in [0, 1] as Bernoulli means), and I(Y;F) from a probe.

    I_XF = E[BCE(x, x̄)] − E[BCE(x, σ(g(m)))]    m: the last (h, w, c) map before pooling
    I_YF = the early-stopped linear probe of `variational.probe_bound` on the pooled map

g decodes every location of the map into its own (H/h)·(W/w)·C patch of the image with a small
MLP shared by the locations (two 1×1 convolutions and a depth-to-space): a decoder that uses where
the information is, which the pooled vector has lost, at a cost independent of the image size.
As in `variational`, the X term is relative to a decoder that ignores F (the mean training image),
so the unknown constant cancels in the normalisation; both terms are evaluated on held-out images
and every snapshot gets the same initialisation, minibatches and budget. Units: nats per image.
"""

import jax
import jax.numpy as jnp

from ckd_jax.mi.variational import decode, fit_adam, init_decoder, probe_bound

_CLIP = 1e-3  # the mean image's pixel probabilities are kept off 0 and 1 (finite logits)


def image_patches(images, map_shape):
  """(N, H, W, C) -> (N, h, w, (H/h)·(W/w)·C): the block of pixels under each map location."""
  n, height, width, channels = images.shape
  h, w = map_shape
  if height % h or width % w:
    raise ValueError(f'the {h}×{w} feature map does not tile the {height}×{width} image')
  ph, pw = height // h, width // w
  blocks = images.reshape(n, h, ph, w, pw, channels).transpose(0, 1, 3, 2, 4, 5)
  return blocks.reshape(n, h, w, ph * pw * channels)


def _bce(targets, logits):
  """Binary cross-entropy of Bernoulli targets in [0, 1], summed over pixels, mean over images."""
  per_pixel = jax.nn.softplus(logits) - targets * logits
  return jnp.mean(jnp.sum(per_pixel, axis=tuple(range(1, per_pixel.ndim))))


def spatial_decoder_bound(
  train_m, train_x, test_m, test_x, key, hidden=64, steps=500, batch_size=128, learning_rate=1e-3
):
  """E[BCE(x, x̄)] − E[BCE(x, σ(g(m)))] on held-out data; maps (N, h, w, c), images (N, H, W, C)."""
  map_shape = train_m.shape[1:3]
  train_p, test_p = image_patches(train_x, map_shape), image_patches(test_x, map_shape)
  mean, std = train_m.mean((0, 1, 2)), train_m.std((0, 1, 2)) + 1e-6  # per channel
  train_m, test_m = (train_m - mean) / std, (test_m - mean) / std
  prior = jnp.clip(train_p.mean(0), _CLIP, 1 - _CLIP)
  prior_logits = jnp.log(prior) - jnp.log1p(-prior)  # (h, w, P): the mean image's logits
  channels = train_m.shape[-1]
  params = init_decoder(key, channels, hidden, prior_logits)

  def loss(params, m, p):
    return _bce(p, decode(params, m))

  params = fit_adam(
    lambda q, idx: loss(q, train_m[idx], train_p[idx]),
    params,
    jax.random.fold_in(key, 1),
    train_m.shape[0],
    steps,
    batch_size,
    learning_rate,
  )
  baseline = _bce(test_p, jnp.broadcast_to(prior_logits, test_p.shape))
  return baseline - loss(params, test_m, test_p)


def infopro_mi(
  train_m,
  train_y,
  test_m,
  test_y,
  num_classes,
  train_x,
  test_x,
  *,
  seed=0,
  probe=None,
  decoder=None,
):
  """{'I_XF', 'I_YF'} for one snapshot's spatial maps; images (N, H, W, C) in [0, 1]."""
  key = jax.random.key(seed)
  pooled = lambda m: m.mean(axis=(1, 2))
  i_yf = probe_bound(
    pooled(train_m), train_y, pooled(test_m), test_y, num_classes, key, **(probe or {})
  )
  i_xf = spatial_decoder_bound(
    train_m, train_x, test_m, test_x, jax.random.fold_in(key, 2), **(decoder or {})
  )
  return {'I_XF': i_xf, 'I_YF': i_yf}
