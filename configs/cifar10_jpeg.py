"""CIFAR-10 JPEG study (EXPERIMENTS.md): the lossy JPEG copy of CIFAR-10, about an hour on 2 CPU
cores.

  mkdir -p ~/.cache/ckd_jax/cifar10-jpeg
  tar -xzf ../shared/data/cifar10-jpeg/cifar10-jpeg.tar.gz -C ~/.cache/ckd_jax/cifar10-jpeg
  python -m ckd_jax.main --config=configs/cifar10_jpeg.py --workdir=runs/cifar10_jpeg

The images are re-encoded JPEG (quality ~75), so accuracies are not comparable with published
CIFAR-10 numbers. ResNet-20 → ResNet-8 (option B), the recipe of configs/fashion_mnist.py on 1,000
training images, 2,000 test images. Arguments after ':' (key=value, comma-separated): root= (the
unpacked folder), teacher=, student=, train_examples= (0: all 50,000), epochs=, batch_size= (the
learning rate follows it: 0.1 per 128), regime= ('study', or 'fit': no augmentation, one
teacher that fits its images, students from every snapshot). For a GPU (see EXPERIMENTS.md):
`teacher=wrn_40_2,student=wrn_40_1,train_examples=0,epochs=60,batch_size=128`.
"""

import os

from ckd_jax import recipes


def get_config(arg=None):
  args = recipes.parse_config_arg(
    arg, {'root': os.path.expanduser('~/.cache/ckd_jax/cifar10-jpeg'), **recipes.CPU_STUDY_ARGS}
  )
  data = dict(
    source='image_folder', name='cifar10_jpeg', root=args.pop('root'), crop_padding=4, flip=True
  )
  data['cache_dir'] = os.path.join(data['root'], 'decoded')
  return recipes.cpu_study_config(data, args)
