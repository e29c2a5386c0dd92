"""models.conv: the explicit backward pass equals JAX's own, inside loops too."""
import chex
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
  return (jnp.asarray(rng.normal(size=(batch, size, size, cin)), jnp.float32),
          jnp.asarray(rng.normal(size=(kernel, kernel, cin, cout)), jnp.float32))


@pytest.mark.parametrize('size,kernel,stride', [(9, 3, 1), (9, 3, 2), (8, 3, 2), (8, 1, 2),
                                                 (10, 7, 2), (5, 1, 1)])
def test_gradients_equal_jaxs_own_rule(size, kernel, stride):
  images, weights = _inputs(3, size, 4, 5, kernel)
  padding = ((kernel // 2, kernel // 2),) * 2
  ours = jax.jit(jax.value_and_grad(
      lambda x, w: _loss(conv_general_dilated, x, w, (stride, stride), padding), (0, 1)))
  reference = jax.jit(jax.value_and_grad(
      lambda x, w: _loss(lax.conv_general_dilated, x, w, (stride, stride), padding), (0, 1)))
  chex.assert_trees_all_close(ours(images, weights), reference(images, weights), rtol=1e-6,
                              atol=1e-6)


def test_gradients_inside_a_loop_equal_those_outside():
  """`lax.map` over stacked runs is where XLA's CPU backend needed this module."""
  images, weights = _inputs(4, 8, 3, 6, 3)
  stacked = jnp.stack([images, images[::-1]]), jnp.stack([weights, -weights])
  grad = jax.grad(lambda x, w: _loss(conv_general_dilated, x, w, (2, 2), ((1, 1), (1, 1))), (0, 1))
  looped = jax.jit(lambda xs, ws: lax.map(lambda a: grad(*a), (xs, ws)))(*stacked)
  one_by_one = [jax.jit(grad)(stacked[0][i], stacked[1][i]) for i in range(2)]
  chex.assert_trees_all_close(looped, jax.tree.map(lambda *x: jnp.stack(x), *one_by_one),
                              rtol=1e-6, atol=1e-6)


def test_grouped_convolutions_keep_jaxs_path():
  """Depthwise convs (MobileNetV2, ShuffleNetV2) are not rewritten: same values as lax."""
  rng = np.random.default_rng(1)
  images = jnp.asarray(rng.normal(size=(2, 6, 6, 4)), jnp.float32)
  weights = jnp.asarray(rng.normal(size=(3, 3, 1, 4)), jnp.float32)
  conv = lambda fn: jax.grad(lambda w: jnp.sum(jnp.sin(fn(
      images, w, (1, 1), ((1, 1), (1, 1)), dimension_numbers=LAYOUT, feature_group_count=4))))
  chex.assert_trees_all_close(conv(conv_general_dilated)(weights),
                              conv(lax.conv_general_dilated)(weights), rtol=1e-6, atol=1e-6)
