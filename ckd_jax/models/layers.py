"""Torch-compatible building blocks shared by the model zoo.

Why these wrappers: the paper's models are PyTorch models. To reproduce them we need torch's padding
(symmetric, where flax 'SAME' pads stride-2 convs asymmetrically), torch's BatchNorm (momentum 0.1
== flax 0.9, eps 1e-5, the unbiased variance in the running average) and He-normal (fan_out,
untruncated) conv initialisation.
"""

from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from ckd_jax.models.conv import conv_general_dilated

he_normal_fan_out = nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')


def conv(features, kernel=3, stride=1, groups=1, use_bias=False, name=None):
  """A k×k conv with torch's symmetric 'same' padding (k // 2 on every side), differentiated in a
  layout XLA's CPU kernels take (`models.conv`)."""
  pad = kernel // 2
  return nn.Conv(
    features,
    (kernel, kernel),
    strides=(stride, stride),
    padding=((pad, pad), (pad, pad)),
    feature_group_count=groups,
    use_bias=use_bias,
    kernel_init=he_normal_fan_out,
    conv_general_dilated=conv_general_dilated,
    name=name,
  )


class BatchNorm(nn.Module):
  """torch.nn.BatchNorm2d: normalises a training batch with its biased variance, but keeps the
  unbiased one (n/(n−1)) in the running average, where flax's BatchNorm keeps the biased one.

  Parameters and statistics have flax's names ('scale', 'bias'; 'mean', 'var'), so variables of
  either module load into the other. With `axis_name` the statistics are synchronised over a pmap
  axis (n counts the examples of every device).
  """

  use_running_average: bool
  momentum: float = 0.9
  epsilon: float = 1e-5
  axis_name: Optional[str] = None

  @nn.compact
  def __call__(self, x):
    features = x.shape[-1]
    scale = self.param('scale', nn.initializers.ones, (features,), jnp.float32)
    bias = self.param('bias', nn.initializers.zeros, (features,), jnp.float32)
    ra_mean = self.variable('batch_stats', 'mean', jnp.zeros, (features,), jnp.float32)
    ra_var = self.variable('batch_stats', 'var', jnp.ones, (features,), jnp.float32)
    if self.use_running_average:
      mean, var = ra_mean.value, ra_var.value
    else:
      axes = tuple(range(x.ndim - 1))
      xf = x.astype(jnp.float32)
      moments = jnp.stack([jnp.mean(xf, axes), jnp.mean(jnp.square(xf), axes)])
      count = x.size // features
      if self.axis_name and not self.is_initializing():
        moments = jax.lax.pmean(moments, self.axis_name)
        count *= jax.lax.psum(1, self.axis_name)
      mean = moments[0]
      var = jnp.maximum(moments[1] - jnp.square(mean), 0.0)  # E[x²] − E[x]², as flax computes it
      if not self.is_initializing():
        unbiased = var * (
          count / max(count - 1, 1) if isinstance(count, int) else count / jnp.maximum(count - 1, 1)
        )
        ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * mean
        ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * unbiased
    y = (x - mean) * (jax.lax.rsqrt(var + self.epsilon) * scale) + bias
    return y.astype(x.dtype)


def batch_norm(train, axis_name=None, name=None):
  """BatchNorm with torch's constants; `axis_name` makes it a synchronised BN under pmap."""
  return BatchNorm(
    use_running_average=not train,
    momentum=0.9,
    epsilon=1e-5,
    axis_name=axis_name if train else None,
    name=name,
  )


def global_avg_pool(x):
  return jnp.mean(x, axis=(1, 2))


def classifier_output(feature_map, num_classes, return_features):
  """The shared head contract on the last (N, h, w, c) feature map: logits, or with
  `return_features=True` (logits, pooled penultimate features F), or with 'spatial'
  (logits, the map itself: what InfoPro-style decoders reconstruct the image from)."""
  features = global_avg_pool(feature_map)
  logits = nn.Dense(num_classes, name='classifier')(features)
  if return_features == 'spatial':
    return logits, feature_map
  return (logits, features) if return_features else logits
