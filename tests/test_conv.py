"""models.conv: the explicit backward pass equals JAX's own, inside loops too."""

import functools

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from ckd_jax.models.conv import conv_general_dilated

LAYOUT = ('NHWC', 'HWIO', 'NHWC')


def _loss(conv, images, kernel, strides, padding):
  """A loss whose output gradient differs at every position (a sum would hide index errors)."""
  out = conv(images, kernel, strides, padding, dimension_numbers=LAYOUT)
  return jnp.sum(jnp.sin(out) * jnp.arange(out.size, dtype=out.dtype).reshape(out.shape) / out.size)


def _inputs(batch, size, cin, cout, kernel, seed=0):
  rng = np.random.default_rng(seed)
  return (
    jnp.asarray(rng.normal(size=(batch, size, size, cin)), jnp.float32),
    jnp.asarray(rng.normal(size=(kernel, kernel, cin, cout)), jnp.float32),
  )


@pytest.mark.parametrize(
  'size,kernel,stride',
  [
    (9, 3, 1),
    (9, 3, 2),
    (8, 3, 2),
    (8, 1, 2),
    (10, 7, 2),
    (5, 1, 1),
    (2, 3, 1),
    (1, 3, 1),
    (2, 3, 2),
    (3, 5, 2),
  ],
)
def test_gradients_equal_jaxs_own_rule(size, kernel, stride):
  images, weights = _inputs(3, size, 4, 5, kernel)
  padding = ((kernel // 2, kernel // 2),) * 2
  ours = jax.jit(
    jax.value_and_grad(
      lambda x, w: _loss(conv_general_dilated, x, w, (stride, stride), padding), (0, 1)
    )
  )
  reference = jax.jit(
    jax.value_and_grad(
      lambda x, w: _loss(lax.conv_general_dilated, x, w, (stride, stride), padding), (0, 1)
    )
  )
  # A kernel larger than the image is a matrix product: another summation order, float32 rounding
  # ≤ 3e-6 seen on values ~5; an index error is O(1).
  tolerance = 1e-6 if kernel <= size else 1e-5
  chex.assert_trees_all_close(
    ours(images, weights), reference(images, weights), rtol=tolerance, atol=tolerance
  )


@pytest.mark.parametrize('size', [8, 2])
def test_gradients_inside_a_loop_equal_those_outside(size):
  """`lax.map` over stacked runs is where XLA's CPU backend needed this module."""
  images, weights = _inputs(4, size, 3, 6, 3)
  stacked = jnp.stack([images, images[::-1]]), jnp.stack([weights, -weights])
  grad = jax.grad(lambda x, w: _loss(conv_general_dilated, x, w, (2, 2), ((1, 1), (1, 1))), (0, 1))
  looped = jax.jit(lambda xs, ws: lax.map(lambda a: grad(*a), (xs, ws)))(*stacked)
  one_by_one = [jax.jit(grad)(stacked[0][i], stacked[1][i]) for i in range(2)]
  chex.assert_trees_all_close(
    looped, jax.tree.map(lambda *x: jnp.stack(x), *one_by_one), rtol=1e-6, atol=1e-6
  )


def test_kernels_larger_than_the_image_are_one_matrix_product():
  """3×3 over 2×2 maps: no convolution left in the program, forward or backward (the values are
  checked against JAX's own rule above)."""
  images, weights = _inputs(2, 2, 4, 5, 3)
  grad = jax.grad(lambda x, w: _loss(conv_general_dilated, x, w, (1, 1), ((1, 1), (1, 1))), (0, 1))
  assert 'conv_general_dilated' not in str(jax.make_jaxpr(grad)(images, weights))
  images, _ = _inputs(2, 3, 4, 5, 3)  # a 3×3 image: XLA's convolution is fast, and kept
  assert 'conv_general_dilated' in str(jax.make_jaxpr(grad)(images, weights))


def test_other_grouped_convolutions_keep_jaxs_path():
  """Two groups of two channels is neither plain nor depthwise: XLA's own convolution."""
  rng = np.random.default_rng(1)
  images = jnp.asarray(rng.normal(size=(2, 6, 6, 4)), jnp.float32)
  weights = jnp.asarray(rng.normal(size=(3, 3, 2, 4)), jnp.float32)
  conv = lambda fn: jax.grad(
    lambda w: jnp.sum(
      jnp.sin(
        fn(images, w, (1, 1), ((1, 1), (1, 1)), dimension_numbers=LAYOUT, feature_group_count=2)
      )
    )
  )
  chex.assert_trees_all_close(
    conv(conv_general_dilated)(weights),
    conv(lax.conv_general_dilated)(weights),
    rtol=1e-6,
    atol=1e-6,
  )


@pytest.mark.parametrize('size,kernel,stride', [(8, 3, 1), (9, 3, 2), (8, 5, 2)])
def test_depthwise_convolutions_equal_lax(size, kernel, stride):
  """MobileNetV2 and ShuffleNetV2's one-filter-per-channel convs, taken as a shifted sum on the CPU:
  values and both gradients equal XLA's grouped convolution (to float32 summation order)."""
  rng = np.random.default_rng(1)
  images = jnp.asarray(rng.normal(size=(2, size, size, 6)), jnp.float32)
  weights = jnp.asarray(rng.normal(size=(kernel, kernel, 1, 6)), jnp.float32)
  padding = ((kernel // 2, kernel // 2),) * 2

  def loss(conv):
    return jax.jit(
      jax.value_and_grad(
        lambda x, w: _loss(
          functools.partial(conv, feature_group_count=6), x, w, (stride, stride), padding
        ),
        (0, 1),
      )
    )

  # Another summation order: float32 rounding of sums up to ~13 (≤ 6e-6 seen); an index error is
  # O(1).
  chex.assert_trees_all_close(
    loss(conv_general_dilated)(images, weights),
    loss(lax.conv_general_dilated)(images, weights),
    rtol=1e-5,
    atol=2e-5,
  )


def test_the_zoos_convolutions_equal_xlas_own_through_flax(monkeypatch):
  """Through flax's nn.Conv as `layers.conv` builds it, plain (stride 2) and depthwise: outputs
  and every gradient equal those with XLA's own convolution."""
  from ckd_jax.models import layers

  class Block(nn.Module):
    @nn.compact
    def __call__(self, x):
      return layers.conv(6, 3, stride=2, groups=6)(jnp.tanh(layers.conv(6, 3, stride=2)(x)))

  images = jnp.asarray(np.random.default_rng(2).normal(size=(4, 9, 9, 3)), jnp.float32)
  params = Block().init(jax.random.key(0), images)

  def outputs_and_grads():
    loss = lambda p, x: jnp.sum(jnp.sin(Block().apply(p, x)))
    return Block().apply(params, images), jax.jit(jax.grad(loss, (0, 1)))(params, images)

  ours = outputs_and_grads()
  monkeypatch.setattr(layers, 'conv_general_dilated', lax.conv_general_dilated)
  chex.assert_trees_all_close(ours, outputs_and_grads(), rtol=1e-5, atol=2e-5)
