"""MobileNetV2 for 32×32 inputs, as the authors (and RepDistiller) define it.

Quirks kept on purpose so parameter counts match: channels are int(c·w) without rounding to a
multiple of 8, the expansion 1×1 conv exists even when t = 1, and the last conv is 1280 wide for w ≤
1.
"""

from typing import Optional

import flax.linen as nn

from ckd_jax.models.layers import batch_norm, classifier_output, conv

# (expansion t, channels c, repeats n, first stride s)
INVERTED_RESIDUAL_SETTINGS = (
  (1, 16, 1, 1),
  (6, 24, 2, 1),
  (6, 32, 3, 2),
  (6, 64, 4, 2),
  (6, 96, 3, 1),
  (6, 160, 3, 2),
  (6, 320, 1, 1),
)


class InvertedResidual(nn.Module):
  features: int
  stride: int
  expansion: int
  axis_name: Optional[str] = None

  @nn.compact
  def __call__(self, x, train):
    hidden = x.shape[-1] * self.expansion
    y = nn.relu(batch_norm(train, self.axis_name)(conv(hidden, 1)(x)))
    y = nn.relu(batch_norm(train, self.axis_name)(conv(hidden, 3, self.stride, groups=hidden)(y)))
    y = batch_norm(train, self.axis_name)(conv(self.features, 1)(y))
    return x + y if self.stride == 1 and x.shape[-1] == self.features else y


class MobileNetV2(nn.Module):
  num_classes: int
  width_mult: float = 1.0
  axis_name: Optional[str] = None

  @nn.compact
  def __call__(self, x, train=False, return_features=False):
    x = nn.relu(batch_norm(train, self.axis_name)(conv(int(32 * self.width_mult), 3, 2)(x)))
    for stage, (t, c, n, s) in enumerate(INVERTED_RESIDUAL_SETTINGS):
      for i in range(n):
        x = InvertedResidual(
          int(c * self.width_mult),
          s if i == 0 else 1,
          t,
          self.axis_name,
          name=f'stage{stage}_block{i}',
        )(x, train)
    last = int(1280 * self.width_mult) if self.width_mult > 1.0 else 1280
    x = nn.relu(batch_norm(train, self.axis_name)(conv(last, 1)(x)))
    return classifier_output(x, self.num_classes, return_features)
