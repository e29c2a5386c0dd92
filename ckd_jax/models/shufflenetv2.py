"""ShuffleNetV2 for 32×32 inputs in the authors' variant (convs with bias, stride-1 stem, no ReLU
there).

RepDistiller's ShuffleV2 is a different network (1,355,528 vs 1,360,896 parameters for 100 classes);
this one is the authors'.
"""

from typing import Optional

import flax.linen as nn
import jax.numpy as jnp

from ckd_jax.models.layers import batch_norm, classifier_output, conv

STAGE_WIDTHS = {
  0.5: (48, 96, 192, 1024),
  1.0: (116, 232, 464, 1024),
  1.5: (176, 352, 704, 1024),
  2.0: (244, 488, 976, 2048),
}
UNITS_PER_STAGE = (4, 8, 4)


def channel_shuffle(x, groups=2):
  n, h, w, c = x.shape
  return x.reshape(n, h, w, groups, c // groups).swapaxes(3, 4).reshape(n, h, w, c)


class ShuffleUnit(nn.Module):
  features: int
  stride: int
  axis_name: Optional[str] = None

  def _branch(self, x, out, train, pointwise_first):
    """[1×1-BN-ReLU] - depthwise 3×3(s)-BN - 1×1-BN-ReLU."""
    c = x.shape[-1]
    if pointwise_first:
      x = nn.relu(batch_norm(train, self.axis_name)(conv(c, 1, use_bias=True)(x)))
    x = batch_norm(train, self.axis_name)(conv(c, 3, self.stride, groups=c, use_bias=True)(x))
    return nn.relu(batch_norm(train, self.axis_name)(conv(out, 1, use_bias=True)(x)))

  @nn.compact
  def __call__(self, x, train):
    half = self.features // 2
    if self.stride == 1 and x.shape[-1] == self.features:
      shortcut, residual = jnp.split(x, 2, axis=-1)
      residual = self._branch(residual, half, train, pointwise_first=True)
    else:
      shortcut = self._branch(x, half, train, pointwise_first=False)
      residual = self._branch(x, half, train, pointwise_first=True)
    return channel_shuffle(jnp.concatenate([shortcut, residual], axis=-1))


class ShuffleNetV2(nn.Module):
  num_classes: int
  ratio: float = 1.0
  axis_name: Optional[str] = None

  def __post_init__(self):  # checked when the model is built, not first at init
    if self.ratio not in STAGE_WIDTHS:
      raise ValueError(
        f'ShuffleNetV2 ratio must be one of {sorted(STAGE_WIDTHS)}, got {self.ratio}'
      )
    super().__post_init__()

  @nn.compact
  def __call__(self, x, train=False, return_features=False):
    widths = STAGE_WIDTHS[self.ratio]
    x = batch_norm(train, self.axis_name)(conv(24, 3, use_bias=True)(x))
    for stage, (width, units) in enumerate(zip(widths[:3], UNITS_PER_STAGE)):
      for i in range(units):
        x = ShuffleUnit(width, 2 if i == 0 else 1, self.axis_name, name=f'stage{stage}_unit{i}')(
          x, train
        )
    x = nn.relu(batch_norm(train, self.axis_name)(conv(widths[3], 1, use_bias=True)(x)))
    return classifier_output(x, self.num_classes, return_features)
