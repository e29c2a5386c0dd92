"""CIFAR-100, the paper's setting (Wang et al. 2022, Tables 1-3).

  python -m ckd_jax.main --config=configs/cifar100.py --workdir=runs/c100
  python -m ckd_jax.main --config=configs/cifar100.py:pair=resnet110-resnet32 --workdir=runs/r110
  python -m ckd_jax.main --config=configs/cifar100.py:recipe=repdistiller --workdir=runs/c100_rd
  python -m ckd_jax.main --config=configs/cifar100.py:teacher_schedule=early_stop --workdir=runs/es

Arguments after ':' (comma-separated key=value):
  pair      teacher-student, one of the paper's: wrn_40_2-wrn_40_1 (default),
            wrn_40_2-mobilenetv2_075, resnet110-resnet32, resnet110-mobilenetv2_075; or set
            teacher= and student= separately.
  recipe    'paper' (200 epochs, batch 128, lr 0.1 Nesterov, ×0.1 at 60/120/180, snapshots every 20,
            KD α = 0.5, τ = 5) or 'repdistiller' (240 epochs, batch 64, lr 0.05, ×0.1 at
            150/180/210, α = 0.1, τ = 4).
  teacher_schedule  'full' or 'early_stop' (ESKD (a): lr ×0.1 at 15, stop at 50).
Teacher choices distilled: T0.3/T0.5/T0.7 (epochs 60/100/140), T_full, the snapshot ensemble of
epochs 160/180/200, the full ensemble of 3 teacher seeds, and no teacher.
  source    'cifar' (default): the official archive in data.root = ./data, where the official
            PyTorch code (torchvision) keeps it, so its users' copy is found as it is: the
            cifar-100-python/ folder, the binary version or the .tar.gz; downloaded (MD5-checked)
            when missing, as that code does (--config.data.download=False: stop instead).
            'tfds': TFDS's cifar100 (the `tfds` extra downloads it).
Cost on one H100-class GPU: about an hour per 200-epoch WRN-40-2 run, so 3 teachers + 7 students
≈ 10 GPU-hours; far too long for a CPU.
"""

from ckd_jax import recipes


def get_config(arg=None):
  return recipes.paper_study_config(arg, dataset='cifar100')
