"""Torch-compatible building blocks shared by the model zoo.

Why these wrappers: the paper's models are PyTorch models. To reproduce them we need torch's padding
(symmetric, where flax 'SAME' pads stride-2 convs asymmetrically), torch's BatchNorm constants
(momentum 0.1 == flax 0.9, eps 1e-5) and He-normal (fan_out, untruncated) conv initialisation.
"""

import flax.linen as nn
import jax.numpy as jnp

he_normal_fan_out = nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')


def conv(features, kernel=3, stride=1, groups=1, use_bias=False, name=None):
  """A k×k conv with torch's symmetric 'same' padding (k // 2 on every side)."""
  pad = kernel // 2
  return nn.Conv(features, (kernel, kernel), strides=(stride, stride),
                 padding=((pad, pad), (pad, pad)), feature_group_count=groups,
                 use_bias=use_bias, kernel_init=he_normal_fan_out, name=name)


def batch_norm(train, axis_name=None, name=None):
  """BatchNorm with torch's constants; `axis_name` makes it a synchronised BN under pmap."""
  return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                      axis_name=axis_name if train else None, name=name)


def global_avg_pool(x):
  return jnp.mean(x, axis=(1, 2))


def classifier_output(features, num_classes, return_features):
  """The shared head contract: logits, or (logits, pooled penultimate features)."""
  logits = nn.Dense(num_classes, name='classifier')(features)
  return (logits, features) if return_features else logits


