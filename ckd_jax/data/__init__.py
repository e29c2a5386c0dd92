"""Data: sources → uint8 `Dataset` (in memory, or a training split streamed from files);
on-device augmentation and batching."""

from ckd_jax.data.augment import augment, crop_and_flip, normalize, sample_crop_flip
from ckd_jax.data.batching import TrainBatches, eval_batches, steps_per_epoch
from ckd_jax.data.dataset import Dataset, FileSplit, Split
from ckd_jax.data.sources import (
  SOURCES,
  DataUnavailableError,
  check_available,
  from_arrays,
  load_dataset,
  load_digits,
  load_fashion_mnist,
  load_image_folder,
  load_tfds,
  read_idx,
)
from ckd_jax.data.streaming import StreamingTrainBatches, make_train_batches
