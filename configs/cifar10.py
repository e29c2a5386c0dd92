"""CIFAR-10 with the options of configs/cifar100.py (pair=, teacher=, student=, recipe=, …).

  python -m ckd_jax.main --config=configs/cifar10.py --workdir=runs/c10
  # the JPEG copy of CIFAR-10 in an image folder (not comparable with published CIFAR-10 numbers):
  python -m ckd_jax.main --config=configs/cifar10.py:source=image_folder \
      --config.data.root=/path/to/cifar10-jpeg --workdir=runs/c10_jpeg
"""
import importlib.util
import pathlib

_spec = importlib.util.spec_from_file_location('cifar100_config',
                                               pathlib.Path(__file__).with_name('cifar100.py'))
_cifar100 = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_cifar100)


def get_config(arg=None):
  return _cifar100.get_config(arg, dataset='cifar10')
