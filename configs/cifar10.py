"""CIFAR-10 with the options of configs/cifar100.py (pair=, teacher=, student=, recipe=, …).

  # the official archive in ./data, downloaded if missing:
  python -m ckd_jax.main --config=configs/cifar10.py --workdir=runs/c10
  # the JPEG copy of CIFAR-10 in an image folder (not comparable with published CIFAR-10 numbers):
  python -m ckd_jax.main --config=configs/cifar10.py:source=image_folder \
      --config.data.root=/path/to/cifar10-jpeg --workdir=runs/c10_jpeg
"""

from ckd_jax import recipes


def get_config(arg=None):
  return recipes.paper_study_config(arg, dataset='cifar10')
