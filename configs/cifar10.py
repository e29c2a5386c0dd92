"""CIFAR-10 with the paper's recipe (teacher WRN-40-2 by default).

  python -m ckd_jax.main --config=configs/cifar10.py --workdir=runs/c10
  # the JPEG copy of CIFAR-10 in an image folder (not comparable with published CIFAR-10 numbers):
  python -m ckd_jax.main --config=configs/cifar10.py:source=image_folder \
      --config.data.root=/path/to/cifar10-jpeg --workdir=runs/c10_jpeg

Arguments after ':': teacher (model name), recipe ('paper' or 'repdistiller'), source ('tfds' or
'image_folder'). Cost as configs/cifar100.py.
"""
from ckd_jax import recipes


def get_config(arg=None):
  args = recipes.parse_config_arg(arg, {'teacher': 'wrn_40_2', 'recipe': 'paper', 'source': 'tfds'})
  data = dict(source=args['source'], name='cifar10')
  return recipes.base_config(data, recipes.teacher_recipe(args['recipe'], args['teacher']))
