"""CIFAR ResNet-(6n+2) (He et al. 2016) with both shortcut options that the literature mixes up.

`shortcut='A'` is the authors' (checkpoint-KD) variant: a parameter-free downsampling shortcut
(every second pixel, channels zero-padded). `shortcut='B'` is RepDistiller's: a 1×1 conv + BN
projection. The two give different parameter counts (e.g. ResNet-32: 470,004 vs 472,756 for 100
classes).
"""

from typing import Optional

import flax.linen as nn
import jax.numpy as jnp

from ckd_jax.models.layers import batch_norm, classifier_output, conv


class BasicBlock(nn.Module):
  features: int
  stride: int
  shortcut: str
  axis_name: Optional[str] = None

  @nn.compact
  def __call__(self, x, train):
    y = nn.relu(batch_norm(train, self.axis_name)(conv(self.features, 3, self.stride)(x)))
    y = batch_norm(train, self.axis_name)(conv(self.features, 3)(y))
    if self.stride == 1 and x.shape[-1] == self.features:
      residual = x
    elif self.shortcut == 'A':
      residual = x[:, :: self.stride, :: self.stride, :]
      extra = self.features - x.shape[-1]
      residual = jnp.pad(residual, ((0, 0), (0, 0), (0, 0), (extra // 2, extra - extra // 2)))
    else:
      residual = batch_norm(train, self.axis_name)(conv(self.features, 1, self.stride)(x))
    return nn.relu(residual + y)


class CifarResNet(nn.Module):
  depth: int
  num_classes: int
  shortcut: str = 'A'
  width: int = 1
  axis_name: Optional[str] = None

  def __post_init__(self):  # checked when the model is built, not first at init
    if self.depth < 8 or (self.depth - 2) % 6:
      raise ValueError(f'CIFAR ResNet depth must be 6n+2 >= 8, got {self.depth}')
    if self.shortcut not in ('A', 'B'):
      raise ValueError(f"shortcut must be 'A' or 'B', got {self.shortcut!r}")
    super().__post_init__()

  @nn.compact
  def __call__(self, x, train=False, return_features=False):
    n = (self.depth - 2) // 6
    widths = [16 * self.width, 32 * self.width, 64 * self.width]
    # RepDistiller's wide variants (resnet8x4, resnet32x4) use a half-width stem: 32 for x4.
    stem = 16 if self.width == 1 else 8 * self.width
    x = nn.relu(batch_norm(train, self.axis_name)(conv(stem, 3)(x)))
    for stage, (width, stride) in enumerate(zip(widths, (1, 2, 2))):
      for i in range(n):
        x = BasicBlock(
          width,
          stride if i == 0 else 1,
          self.shortcut,
          self.axis_name,
          name=f'stage{stage}_block{i}',
        )(x, train)
    return classifier_output(x, self.num_classes, return_features)
