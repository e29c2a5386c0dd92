"""torchvision's ImageNet ResNet-18 and ResNet-34 (He et al. 2016): a 7×7/2 stem with a 3×3/2 max
pool, four stages of basic blocks (64 to 512 channels) whose first blocks downsample through a
1×1 conv + BN projection. Parameter counts equal torchvision's: 11,689,512 and 21,797,672 for 1000
classes.
"""

from typing import Optional

import flax.linen as nn

from ckd_jax.models.layers import batch_norm, classifier_output, conv
from ckd_jax.models.resnet import BasicBlock

BLOCKS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}


class ImageNetResNet(nn.Module):
  depth: int
  num_classes: int
  axis_name: Optional[str] = None

  def __post_init__(self):
    if self.depth not in BLOCKS:
      raise ValueError(f'ImageNet ResNet depth must be one of {sorted(BLOCKS)}, got {self.depth}')
    super().__post_init__()

  @nn.compact
  def __call__(self, x, train=False, return_features=False):
    x = nn.relu(batch_norm(train, self.axis_name)(conv(64, 7, 2)(x)))
    x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    for stage, (width, blocks) in enumerate(zip((64, 128, 256, 512), BLOCKS[self.depth])):
      for i in range(blocks):
        stride = 2 if stage and not i else 1
        x = BasicBlock(width, stride, 'B', self.axis_name, name=f'stage{stage}_block{i}')(x, train)
    return classifier_output(x, self.num_classes, return_features)
