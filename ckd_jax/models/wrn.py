"""Pre-activation Wide ResNet (Zagoruyko & Komodakis) as used by the paper's teachers (WRN-40-2)."""

from typing import Optional

import flax.linen as nn

from ckd_jax.models.layers import batch_norm, classifier_output, conv


class WideBlock(nn.Module):
  """BN-ReLU-conv(s)-BN-ReLU-conv; a 1×1 projection of the *pre-activated* input when widths
  differ."""

  features: int
  stride: int
  axis_name: Optional[str] = None

  @nn.compact
  def __call__(self, x, train):
    needs_projection = x.shape[-1] != self.features
    pre = nn.relu(batch_norm(train, self.axis_name)(x))
    y = conv(self.features, 3, self.stride)(pre)
    y = nn.relu(batch_norm(train, self.axis_name)(y))
    y = conv(self.features, 3)(y)
    shortcut = conv(self.features, 1, self.stride)(pre) if needs_projection else x
    return shortcut + y


class WideResNet(nn.Module):
  depth: int
  widen_factor: int
  num_classes: int
  axis_name: Optional[str] = None

  def __post_init__(self):  # checked when the model is built, not first at init
    if self.depth < 10 or (self.depth - 4) % 6 or self.widen_factor < 1:
      raise ValueError(
        f'WRN depth must be 6n+4 >= 10 and width >= 1, got {self.depth}, {self.widen_factor}'
      )
    super().__post_init__()

  @nn.compact
  def __call__(self, x, train=False, return_features=False):
    blocks_per_group = (self.depth - 4) // 6
    x = conv(16, 3)(x)
    for group, (width, stride) in enumerate(zip((16, 32, 64), (1, 2, 2))):
      for i in range(blocks_per_group):
        x = WideBlock(
          width * self.widen_factor,
          stride if i == 0 else 1,
          self.axis_name,
          name=f'group{group}_block{i}',
        )(x, train)
    x = nn.relu(batch_norm(train, self.axis_name)(x))
    return classifier_output(x, self.num_classes, return_features)
