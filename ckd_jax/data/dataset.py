"""The dataset every source produces: uint8 NHWC images and int32 labels per split, in memory
(`Split`) or, for a streamed training split, as files read on demand (`FileSplit`)."""

import dataclasses
import hashlib

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

  def in_memory(self):
    return self

  def fingerprint(self):
    """A short digest of the split: its shape, labels and every k-th image (k giving ~1,000 images,
    so that even ImageNet's validation split takes milliseconds). A number measured on a split
    records it, to be reused only on the same split."""
    digest = hashlib.sha256(str(self.images.shape).encode())
    digest.update(self.labels.astype(np.int32).tobytes())
    digest.update(np.ascontiguousarray(self.images[:: max(1, len(self) // 1000)]).tobytes())
    return digest.hexdigest()[:16]


def decode_image(path, image_size):
  """One image file → uint8 (H, W, 3), resized to image_size² when image_size is set."""
  from PIL import Image

  try:
    with Image.open(path) as im:
      im = im.convert('RGB')
      if image_size:
        im = im.resize((image_size, image_size), Image.BILINEAR)
      return np.asarray(im, dtype=np.uint8)
  except OSError as e:  # PIL's UnidentifiedImageError and truncated files are OSErrors
    raise ValueError(
      f'image_folder: {path} cannot be decoded ({e}); remove or replace it'
    ) from None


class FileSplit:
  """A split kept as files (decoded on demand, all at `image_size`²), in a fixed order."""

  def __init__(self, files, labels, image_size, threads=16):
    if not image_size:
      raise ValueError(
        'a streamed split needs config.data.image_size (every image is resized to it as it is read)'
      )
    self.files, self.labels = list(files), np.asarray(labels, np.int32)
    self.image_size, self.threads = image_size, threads

  def __len__(self):
    return len(self.files)

  def load(self, indices):
    """uint8 (len(indices), H, W, 3)."""
    return np.stack([decode_image(self.files[i], self.image_size) for i in indices])

  def take(self, n):
    """The first n examples (0: all), still as files."""
    return FileSplit(self.files[:n], self.labels[:n], self.image_size, self.threads) if n else self

  def in_memory(self):
    """Decoded (e.g. the variational estimator's fit set, after `take`)."""
    return Split(self.load(range(len(self))), self.labels)


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
    return self.test.images.shape[1:]  # (the test split is always in memory)


def channel_stats(images):
  """Per-channel mean and std in [0, 1], for datasets without published constants."""
  x = images.astype(np.float64) / 255.0
  return (
    tuple(float(v) for v in x.mean(axis=(0, 1, 2))),
    tuple(float(v) for v in x.std(axis=(0, 1, 2))),
  )
