"""ImageNet (ILSVRC-2012): torchvision's ResNet-34 teacher → ResNet-18 student, the standard
90-epoch recipe. An example for several GPUs or nodes; it has not been run here (no ImageNet, no
GPU), only tested on a small generated image folder.

  python launch/slurm.py --config=configs/imagenet.py --workdir=runs/imagenet \
      --nodes=2 --gpus_per_node=8 --partition=gpu --hours=72 -- --config.data.root=/data/imagenet

The data is an image folder: <root>/train/<wnid>/*.JPEG and the validation set sorted into
<root>/test/<wnid>/. The training images are streamed from the files (data.stream); the 50,000
validation images are decoded once into memory (cached as .npy with data.cache_dir).
Augmentation differs from torchvision's recipe: every image is resized to 224×224 as it is read,
then randomly cropped after a 16-pixel zero pad and flipped on the device (no RandomResizedCrop).
"""

from ckd_jax import recipes


def get_config(arg=None):
  del arg
  # SGD 0.1 (batch 256), momentum 0.9 without Nesterov, weight decay 1e-4, ×0.1 at 30 and 60.
  optimizer = recipes.optimizer(0.1, (30, 60), weight_decay=1e-4, nesterov=False)
  recipe = dict(
    epochs=90, batch_size=256, label_smoothing=0.0, checkpoint_every_steps=1000, optimizer=optimizer
  )
  teacher = dict(
    recipe, arch='imagenet_resnet34', num_seeds=1, snapshot_epochs=tuple(range(10, 91, 10))
  )
  distill = dict(
    recipe,
    student='imagenet_resnet18',
    num_seeds=1,
    teachers=('epoch:30', 'epoch:60', 'final', 'selected', 'none'),
    alpha=0.5,
    temperature=5.0,
    ensemble_mode='probs',
    kd_until_epoch=0,
    teacher_train_mode_batch_norm=False,
  )
  data = dict(
    source='image_folder',
    name='imagenet2012',
    image_size=224,
    crop_padding=16,
    flip=True,
    stream=True,
    stream_threads=32,
    eval_batch_size=500,
  )
  select = dict(num_samples=10000, fit_samples=10000, batch_size=250)
  return recipes.base_config(data, teacher, distill, select)
