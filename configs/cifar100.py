"""CIFAR-100, the paper's setting (Wang et al. 2022, Table 3): teacher WRN-40-2 by default.

  python -m ckd_jax.main --config=configs/cifar100.py --workdir=runs/c100
  python -m ckd_jax.main --config=configs/cifar100.py:teacher=resnet110 --workdir=runs/c100_r110
  python -m ckd_jax.main --config=configs/cifar100.py:recipe=repdistiller --workdir=runs/c100_rd

Arguments after ':' (comma-separated key=value): teacher (a model name, default wrn_40_2),
recipe ('paper' = 200 epochs, batch 128, lr 0.1 Nesterov, ×0.1 at 60/120/180, snapshots every 20;
'repdistiller' = 240 epochs, batch 64, lr 0.05, ×0.1 at 150/180/210).
Data: TFDS 'cifar100' (prepared in ~/tensorflow_datasets or --config.data.data_dir); without it the
run stops at once and says how to provide it. Cost of the teacher stage: 200 epochs of WRN-40-2;
about an hour on one H100-class GPU, far too long for a CPU.
"""
from ckd_jax import recipes


def get_config(arg=None):
  args = recipes.parse_config_arg(arg, {'teacher': 'wrn_40_2', 'recipe': 'paper'})
  data = dict(source='tfds', name='cifar100')
  return recipes.base_config(data, recipes.teacher_recipe(args['recipe'], args['teacher']))
