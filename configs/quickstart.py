"""Offline quick-start on sklearn's bundled 8×8 digits: a few minutes on a 2-core CPU.

  python -m ckd_jax.main --config=configs/quickstart.py --workdir=/tmp/ckd

Trains two ResNet-20 teachers (snapshots at epochs 2, 4, 6, 8, 10), estimates I(X;F) and I(Y;F) over
the snapshots of the first and picks T*, then trains ResNet-8 students from T at epoch 4, T_full,
T*, a snapshot ensemble, the full ensemble of both teachers, and without a teacher.
"""

from ckd_jax import recipes


def get_config(arg=None):
  del arg
  optimizer = recipes.optimizer(0.05, (6, 8))
  teacher = dict(
    arch='resnet20',
    num_seeds=2,
    epochs=10,
    batch_size=64,
    label_smoothing=0.0,
    snapshot_epochs=(2, 4, 6, 8, 10),
    checkpoint_every_steps=100,
    optimizer=optimizer,
  )
  distill = dict(
    student='resnet8_b',
    num_seeds=1,
    epochs=10,
    batch_size=64,
    label_smoothing=0.0,
    checkpoint_every_steps=100,
    optimizer=optimizer,
    teachers=(
      'epoch:4',
      'final',
      'selected',
      'snapshot_ensemble:6,8,10',
      'full_ensemble:2',
      'none',
    ),
    alpha=0.5,
    temperature=4.0,
    ensemble_mode='probs',
    kd_until_epoch=0,
    teacher_train_mode_batch_norm=False,
  )
  # Rolling checkpoints every 100 of a run's 220 steps: an Orbax save costs a fixed time per save.
  # 8×8 digits: a 1-pixel crop jitter; no flips (a flipped digit is another symbol).
  data = dict(source='digits', name='digits', crop_padding=1, flip=False, eval_batch_size=360)
  # (the variational settings size its probes and decoders for digits, when
  # --config.select.method=variational asks for them)
  select = dict(
    num_samples=0,
    fit_samples=1438,
    batch_size=360,
    variational=dict(
      seed=0,
      probe=dict(steps=300, batch_size=256, learning_rate=1e-2),
      decoder=dict(hidden=128, steps=300, batch_size=256, learning_rate=1e-3, pixel_noise_std=0.1),
    ),
  )
  config = recipes.base_config(data, teacher, distill, select)
  # 8×8 images are too little work to split: one CPU device ran ResNet-20 steps faster than a
  # mesh of host devices (benchmarks/RESULTS.md), unlike 32×32 images.
  config.parallel = 'none'
  return config
