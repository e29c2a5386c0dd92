"""The in-memory dataset every source produces: uint8 NHWC images, int32 labels, per split."""
import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Split:
  images: np.ndarray  # uint8, (N, H, W, C)
  labels: np.ndarray  # int32, (N,)

  def __post_init__(self):
    if self.images.dtype != np.uint8 or self.images.ndim != 4:
      raise ValueError(f'images must be uint8 NHWC, got {self.images.dtype} {self.images.shape}')
    if self.labels.shape != (self.images.shape[0],):
      raise ValueError(f'{self.images.shape[0]} images but labels of shape {self.labels.shape}')

  def __len__(self):
    return self.labels.shape[0]

  def take(self, n):
    """The first n examples (sources are shuffled once, so this is a fixed random subset)."""
    return Split(self.images[:n], self.labels[:n]) if n else self


@dataclasses.dataclass(frozen=True)
class Dataset:
  name: str
  train: Split
  test: Split
  num_classes: int
  mean: tuple  # per channel, in [0, 1]
  std: tuple

  @property
  def image_shape(self):
    return self.train.images.shape[1:]


def channel_stats(images):
  """Per-channel mean and std in [0, 1], for datasets without published constants."""
  x = images.astype(np.float64) / 255.0
  return (tuple(float(v) for v in x.mean(axis=(0, 1, 2))),
          tuple(float(v) for v in x.std(axis=(0, 1, 2))))
