"""Model zoo: `get_model(name, num_classes, **kw)` with RepDistiller-style names.

Every model is a flax.linen Module called as `model.apply(variables, images, train=False,
return_features=False)` on NHWC float images; with `return_features=True` it returns
`(logits, features)`, features being the pooled penultimate vector F that the MI estimators measure;
with `return_features='spatial'`, `(logits, feature_map)`, the last (N, h, w, c) map before pooling.
"""

import functools
import re

from ckd_jax.models.imagenet_resnet import ImageNetResNet
from ckd_jax.models.mobilenetv2 import MobileNetV2
from ckd_jax.models.resnet import CifarResNet
from ckd_jax.models.shufflenetv2 import ShuffleNetV2
from ckd_jax.models.wrn import WideResNet


def _parse_wrn(match):
  return functools.partial(WideResNet, depth=int(match[1]), widen_factor=int(match[2]))


def _parse_resnet(match):
  width = int(match[2]) if match[2] else 1
  # 'resnetNN' is the authors' option-A net; 'resnetNN_b' and 'resnetNNx4' are RepDistiller's.
  shortcut = 'B' if match[3] or match[2] else 'A'
  return functools.partial(CifarResNet, depth=int(match[1]), width=width, shortcut=shortcut)


def _parse_imagenet_resnet(match):
  return functools.partial(ImageNetResNet, depth=int(match[1]))


def _parse_mobilenet(match):
  return functools.partial(MobileNetV2, width_mult=int(match[1]) / 100 if match[1] else 1.0)


def _parse_shufflenet(match):
  return functools.partial(ShuffleNetV2, ratio=int(match[1]) / 10 if match[1] else 1.0)


_PATTERNS = (
  (re.compile(r'wrn_(\d+)_(\d+)'), _parse_wrn),
  (re.compile(r'resnet(\d+)(?:x(\d+))?(_b)?'), _parse_resnet),
  (re.compile(r'imagenet_resnet(\d+)'), _parse_imagenet_resnet),
  (re.compile(r'mobilenetv2(?:_(\d{3}))?'), _parse_mobilenet),
  (re.compile(r'shufflenetv2(?:_(\d{2}))?'), _parse_shufflenet),
)

EXAMPLE_NAMES = (
  'wrn_40_2',
  'wrn_40_1',
  'wrn_16_2',
  'resnet110',
  'resnet32',
  'resnet20',
  'resnet8',
  'resnet32_b',
  'resnet8x4',
  'resnet32x4',
  'mobilenetv2',
  'mobilenetv2_075',
  'mobilenetv2_050',
  'shufflenetv2',
  'shufflenetv2_05',
  'imagenet_resnet18',
  'imagenet_resnet34',
)


def get_model(name: str, num_classes: int, axis_name=None, **kwargs):
  """Builds a flax.linen model by name (see the module docstring for how it is called).

  Names: `wrn_<depth>_<k>`, `resnet<depth>` (option-A shortcut, the authors'), `resnet<depth>_b`
  (option B, RepDistiller's), `resnet<depth>x<width>` (RepDistiller's wide ResNets, option B),
  `mobilenetv2[_<100·w>]`, `shufflenetv2[_<10·ratio>]`, `imagenet_resnet{18,34}` (torchvision's).
  `axis_name` turns BatchNorm into a synchronised BN over that pmap axis.
  """
  if not isinstance(num_classes, int) or num_classes < 2:
    raise ValueError(f'num_classes must be an integer >= 2, got {num_classes!r}')
  for pattern, parse in _PATTERNS:
    match = pattern.fullmatch(name)
    if match:
      return parse(match)(num_classes=num_classes, axis_name=axis_name, **kwargs)
  raise ValueError(f'Unknown model {name!r}. Known forms, e.g.: {", ".join(EXAMPLE_NAMES)}')
