"""Tiny-ImageNet (200 classes, 64×64): the paper's study on its second dataset.

  unzip tiny-imagenet-200.zip -d ~/data        # the official archive
  python -m ckd_jax.main --config=configs/tiny_imagenet.py --config.data.root=~/data \
      --workdir=runs/tiny

The paper reports Tiny-ImageNet results, but neither it nor the authors' code gives the pair or the
recipe used there, so this is the nearest standard setting, said plainly: the paper's CIFAR recipe
and pair (WRN-40-2 -> WRN-40-1, 200 epochs, snapshots every 20, KD α = 0.5, τ = 5) on 64×64 images,
with an 8-pixel pad-and-crop (the CIFAR crop scaled to the image) and flips; the networks' global
pooling takes the larger images as they are. Arguments after ':' are those of configs/cifar100.py
(pair=, teacher=, student=, recipe=, teacher_schedule=). The val split (10,000 labelled images)
serves as the test split; the unlabelled test split is not read. Images are decoded once and kept as
.npy in data.cache_dir (default: tiny-imagenet-200/decoded). Cost: ~4× a CIFAR run per epoch (4× the
pixels, 2× the images); on one H100-class GPU roughly 10 hours per teacher.
"""

import os

from ckd_jax import recipes


def get_config(arg=None):
  config = recipes.paper_study_config(arg, dataset='tiny_imagenet', source='tiny_imagenet')
  config.data.update(dict(root=os.path.expanduser('~/data'), crop_padding=8))
  return config
