"""Offline quick-start on sklearn's bundled 8×8 digits: about a minute on a 2-core CPU.

  python -m ckd_jax.main --config=configs/quickstart.py --workdir=/tmp/ckd

Leaves teachers/resnet20_seed0/ with snapshots at epochs 2, 4, 6, 8, 10, metrics.jsonl and final.json.
"""
from ckd_jax import recipes


def get_config(arg=None):
  del arg
  teacher = dict(
      arch='resnet20', num_seeds=1, epochs=10, batch_size=64, label_smoothing=0.0,
      snapshot_epochs=(2, 4, 6, 8, 10), checkpoint_every_steps=50,
      optimizer=recipes.optimizer(0.05, (6, 8)))
  # 8×8 digits: a 1-pixel crop jitter; no flips (a flipped digit is another symbol).
  data = dict(source='digits', name='digits', crop_padding=1, flip=False, eval_batch_size=360)
  return recipes.base_config(data, teacher)
