"""2-D convolution with its backward pass written out for XLA's CPU backend.

Why: JAX differentiates a convolution into two convolutions whose dimension layouts XLA's CPU
backend has to rearrange before its fast kernels take them. It does so in a program's top level, but
not inside loops (a training step inside `lax.map` over stacked runs or `lax.scan` over K steps),
where the kernel gradient then ran many times slower (benchmarks/RESULTS.md). Here both gradients
are convolutions in the layout the kernels take (images NHWC, kernels HWIO), with the transposes
explicit, so they are fast everywhere; the values are those of JAX's own rule (tested). Depthwise
convolutions (MobileNetV2, ShuffleNetV2) are a sum of shifted, per-channel scaled images here: XLA's
CPU backend ran them as dense convolutions over a block-diagonal kernel. A kernel larger than its
image (the 2×2 maps of the quick-start's ResNets) is one matrix product of the image's windows,
where XLA's CPU convolution was slow too. `benchmarks/conv_grads.py` times each against XLA's own
(benchmarks/RESULTS.md); revisit with each jaxlib release. Only the CPU takes these paths: GPUs keep
XLA's own, which cuDNN's kernels expect.
"""

import functools

import jax
import jax.numpy as jnp
from jax import lax

_LAYOUT = ('NHWC', 'HWIO', 'NHWC')


def _conv(images, kernel, strides, padding, lhs_dilation=None, rhs_dilation=None):
  return lax.conv_general_dilated(
    images, kernel, strides, padding, lhs_dilation, rhs_dilation, dimension_numbers=_LAYOUT
  )


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv_with_canonical_grads(images, kernel, strides, padding):
  return _conv(images, kernel, strides, padding)


def _forward(images, kernel, strides, padding):
  return _conv(images, kernel, strides, padding), (images, kernel)


def _backward(strides, padding, residuals, grad_out):
  images, kernel = residuals
  kernel_hw = kernel.shape[:2]
  # d/d images: the output gradient dilated by the stride, padded so that the flipped kernel
  # (inputs and outputs swapped) maps it back onto every input pixel.
  pads = [
    (k - 1 - lo, k - 1 - hi + (n + lo + hi - k) % s)
    for k, (lo, hi), n, s in zip(kernel_hw, padding, images.shape[1:3], strides)
  ]
  flipped = jnp.flip(kernel, (0, 1)).transpose(0, 1, 3, 2)
  grad_images = _conv(grad_out, flipped, (1, 1), pads, lhs_dilation=strides)
  # d/d kernel: a convolution over the images in which the input channels act as the batch, the
  # examples as the features and the output gradient as the kernel (dilated by the stride).
  grad_kernel = _conv(
    images.transpose(3, 1, 2, 0),
    grad_out.transpose(1, 2, 0, 3),
    (1, 1),
    padding,
    rhs_dilation=strides,
  )
  grad_kernel = grad_kernel[:, : kernel_hw[0], : kernel_hw[1], :].transpose(1, 2, 0, 3)
  return grad_images.astype(images.dtype), grad_kernel.astype(kernel.dtype)


_conv_with_canonical_grads.defvjp(_forward, _backward)


def _windows(images, kernel_hw, strides, padding):
  """The padded images seen by each of the kernel's kh·kw offsets, strided: window (i, j) times
  kernel[i, j] summed over (i, j) is the convolution."""
  padded = jnp.pad(images, ((0, 0), *padding, (0, 0)))
  out_hw = [
    (n + lo + hi - k) // s + 1
    for n, (lo, hi), k, s in zip(images.shape[1:3], padding, kernel_hw, strides)
  ]
  return [
    lax.slice(
      padded,
      (0, i, j, 0),
      (
        images.shape[0],
        i + (out_hw[0] - 1) * strides[0] + 1,
        j + (out_hw[1] - 1) * strides[1] + 1,
        images.shape[3],
      ),
      (1, *strides, 1),
    )
    for i in range(kernel_hw[0])
    for j in range(kernel_hw[1])
  ]


def _depthwise(images, kernel, strides, padding):
  """One k×k filter per channel (kernel (kh, kw, 1, C)): the sum over the kh·kw offsets of the
  windows times that offset's per-channel weights. Autodiff of these slices is fast on the CPU, in
  loops too."""
  out = jnp.zeros((), jnp.promote_types(images.dtype, jnp.float32))  # bf16 sums in float32
  for window, weights in zip(
    _windows(images, kernel.shape[:2], strides, padding), kernel.reshape(-1, kernel.shape[3])
  ):
    out = out + window * weights
  return out.astype(images.dtype)


def _patches(images, kernel, strides, padding):
  """A kernel larger than the image (3×3 over the 2×2 maps of a ResNet's last stage on 8×8 digits):
  one matrix product of the windows, side by side, with the kernel as a (kh·kw·C_in, C_out) matrix.
  XLA's CPU backend ran these convolutions, and the image gradient of each, slowly
  (benchmarks/conv_grads.py --shapes 64x2x64); autodiff of the product is fast, in loops too."""
  patches = jnp.concatenate(_windows(images, kernel.shape[:2], strides, padding), axis=3)
  out = lax.dot_general(
    patches,
    kernel.reshape(-1, kernel.shape[3]),
    (((3,), (0,)), ((), ())),
    preferred_element_type=jnp.promote_types(images.dtype, jnp.float32),
  )
  return out.astype(images.dtype)


def conv_general_dilated(
  lhs,
  rhs,
  window_strides,
  padding,
  lhs_dilation=None,
  rhs_dilation=None,
  dimension_numbers=None,
  feature_group_count=1,
  precision=None,
  preferred_element_type=None,
):
  """`lax.conv_general_dilated`, as flax's `nn.Conv` calls it. On the CPU, an NHWC/HWIO
  convolution without dilation or precision settings takes the paths above: the matrix product of
  windows (no groups, a kernel larger than the image), the explicit backward pass (no groups) or
  the shifted sum (depthwise: one filter per channel)."""
  simple = (
    jax.default_backend() == 'cpu'
    and lhs.ndim == 4
    and not isinstance(padding, str)
    and precision is None
    and preferred_element_type is None
    and all(d == 1 for d in tuple(lhs_dilation or ()) + tuple(rhs_dilation or ()))
    and lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
    == lax.conv_dimension_numbers(lhs.shape, rhs.shape, _LAYOUT)
  )
  if simple:
    args = lhs, rhs, tuple(window_strides), tuple(tuple(p) for p in padding)
    if feature_group_count == 1:
      larger = any(k > n for k, n in zip(rhs.shape[:2], lhs.shape[1:3]))
      return (_patches if larger else _conv_with_canonical_grads)(*args)
    if feature_group_count == lhs.shape[3] == rhs.shape[3] and rhs.shape[2] == 1:  # depthwise
      return _depthwise(*args)
  return lax.conv_general_dilated(
    lhs,
    rhs,
    window_strides,
    padding,
    lhs_dilation,
    rhs_dilation,
    dimension_numbers,
    feature_group_count,
    precision=precision,
    preferred_element_type=preferred_element_type,
  )
