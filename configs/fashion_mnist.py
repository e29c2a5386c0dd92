"""Fashion-MNIST study (EXPERIMENTS.md): the official IDX files, offline, about an hour on 2 CPU
cores.

  sudo apt-get install dataset-fashion-mnist      # Debian: /usr/share/datasets/fashion-mnist
  python -m ckd_jax.main --config=configs/fashion_mnist.py --workdir=runs/fashion_mnist

ResNet-20 → ResNet-8 (option B), 3 teacher seeds × 30 epochs on 1,000 training images (batch 64, lr
0.05, ×0.1 at 9/18/27), snapshots every 3 epochs, T* by `variational` (with `kde` alongside), and
3 students per teacher choice: T0.3/T0.5/T0.7, T_full, T*, a snapshot ensemble, the full ensemble of
3 and no teacher; 2,000 test images. Arguments after ':' (key=value, comma-separated): teacher=,
student=, train_examples= (0: all 60,000), epochs=, batch_size= (the learning rate
follows it: 0.1 per 128), regime= ('study', or 'fit': no augmentation, one
teacher that fits its images, students from every snapshot).
"""

from ckd_jax import recipes


def get_config(arg=None):
  args = recipes.parse_config_arg(arg, recipes.CPU_STUDY_ARGS)
  data = dict(source='fashion_mnist', name='fashion_mnist', crop_padding=2, flip=True)
  return recipes.cpu_study_config(data, args)
