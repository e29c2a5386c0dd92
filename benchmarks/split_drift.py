"""How far a device split drifts from one device over the tests' smooth teacher run.

  python benchmarks/split_drift.py                          # the tests' rate, the tests' XLA flags
  python benchmarks/split_drift.py --learning_rates 0.01,0.02,0.03

Why: tests/test_teacher_run.py compares 'pmap' and 'mesh' runs of
`pipeline_configs.split_smooth_teacher_config` with a one-device run to 1e-4. One split step equals
the one-device step to rounding, but where a ReLU or BatchNorm input sits within rounding of its
kink the runs part (1e-3 to 1e-2 in a few steps), and which learning rates meet a kink changes
with the rounding of the compiled programs. Run this after changing the tests' XLA flags
(tests/child_env.py) or jaxlib, and pick a rate whose every cell stays near 1e-6. Prints, per rate,
split and epoch, the largest absolute difference over the snapshot's parameters and batch
statistics; writes JSON (default benchmarks/results/split_drift.json).
"""

import argparse
import os
import pathlib
import tempfile

from tests_setup import use_the_tests_xla, write_record

HERE = pathlib.Path(__file__).resolve().parent


def drift_rows(learning_rates, workdir):
  """One row per (rate, split, epoch): the split run's largest distance from the one-device run."""
  import jax
  import numpy as np
  from pipeline_configs import split_smooth_teacher_config

  from ckd_jax import pipeline
  from ckd_jax.checkpoints import SnapshotStore
  from ckd_jax.workdir.layout import teacher_run_dir

  rows = []
  for rate in learning_rates:
    runs = {}
    for mode in ('none', 'pmap', 'mesh'):
      config = split_smooth_teacher_config(mode, learning_rate=rate)
      run_workdir = os.path.join(workdir, f'{rate}_{mode}')
      pipeline.run(config, run_workdir)
      runs[mode] = SnapshotStore(teacher_run_dir(run_workdir, 'resnet8_b', 0))
    for mode in ('pmap', 'mesh'):
      for epoch in config.teacher.snapshot_epochs:
        split, one = (runs[m].restore(epoch)[0] for m in (mode, 'none'))
        # np.max, not max(): a NaN leaf must show as nan, and Python's max() may skip it.
        distance = float(
          np.max(
            [
              np.max(np.abs(np.asarray(a) - np.asarray(b)))
              for a, b in zip(jax.tree.leaves(split), jax.tree.leaves(one), strict=True)
            ]
          )
        )
        rows.append(dict(learning_rate=rate, split=mode, epoch=epoch, max_abs_difference=distance))
  return rows


def learning_rates(text):
  """'0.01,0.02' → [0.01, 0.02]; anything else is argparse's one-line error."""
  try:
    rates = [float(v) for v in text.split(',')]
  except ValueError:
    raise argparse.ArgumentTypeError(f'not comma-separated numbers: {text!r}') from None
  if not all(rate > 0 for rate in rates):
    raise argparse.ArgumentTypeError(f'learning rates must be positive: {text!r}')
  return rates


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument(
    '--learning_rates',
    type=learning_rates,
    default=None,
    help='comma-separated; default: the tests',
  )
  parser.add_argument('--out', default=str(HERE / 'results' / 'split_drift.json'))
  args = parser.parse_args(argv)
  use_the_tests_xla()
  from pipeline_configs import SPLIT_SMOOTH_LEARNING_RATE

  from ckd_jax.training.loop import DivergenceError

  with tempfile.TemporaryDirectory() as workdir:
    try:
      rows = drift_rows(args.learning_rates or [SPLIT_SMOOTH_LEARNING_RATE], workdir)
    except DivergenceError as e:  # a rate too high for the tiny run: nothing to compare
      raise SystemExit(f'error: {e}') from None
  print('| learning rate | split | epoch | max abs difference from one device |')
  print('|---:|---|---:|---:|')
  for r in rows:
    print(f'| {r["learning_rate"]} | {r["split"]} | {r["epoch"]} | {r["max_abs_difference"]:.1e} |')
  write_record(args.out, rows)
  return rows


if __name__ == '__main__':
  main()
