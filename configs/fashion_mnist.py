"""Fashion-MNIST (official IDX files, offline): a real benchmark between digits and CIFAR.

  apt-get install dataset-fashion-mnist      # Debian: /usr/share/datasets/fashion-mnist
  python -m ckd_jax.main --config=configs/fashion_mnist.py --workdir=runs/fmnist

Arguments after ':' as configs/cifar100.py (teacher=, student=, recipe is always the paper's shape
scaled to 30 epochs). Teachers: 2 seeds × 30 epochs, snapshots every 5; students from T0.3/T0.5/T0.7,
T_full, T*, the ensembles and no teacher. Cost: GPU time not measured yet; on a 2-core CPU a
ResNet-20 epoch takes about 4-5 minutes (extrapolated from the 178 img/s measured on 32×32 CIFAR
images, benchmarks/RESULTS.md), so use a GPU or cut data.train_examples.
"""
from ckd_jax import recipes


def get_config(arg=None):
  args = recipes.parse_config_arg(arg, {'teacher': 'resnet20', 'student': 'resnet8_b'})
  teacher = recipes.paper_teacher(args['teacher'])
  teacher.update(dict(num_seeds=2, epochs=30, snapshot_epochs=tuple(range(5, 31, 5)),
                      optimizer=recipes.optimizer(0.1, (10, 20))))
  distill = recipes.student_recipe('paper', args['student'],
                                   recipes.paper_teacher_choices(teacher, teacher.num_seeds))
  distill.update(dict(epochs=30, optimizer=recipes.optimizer(0.1, (10, 20))))
  data = dict(source='fashion_mnist', name='fashion_mnist', crop_padding=2, flip=True)
  return recipes.base_config(data, teacher, distill)
