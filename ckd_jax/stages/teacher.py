"""The teacher stage (Algorithm 1, step 1): cross-entropy runs that keep snapshots at fixed epochs.

`teacher.num_seeds` teachers (seeds config.seed + k) give the full ensemble; the snapshots of one
run give the snapshot ensemble and the candidates of the select stage.
"""

import functools

from absl import logging

from ckd_jax.data import load_dataset
from ckd_jax.data_parallel import DataParallel
from ckd_jax.stages import supervised
from ckd_jax.stages.supervised import Run, RunSpec
from ckd_jax.training import built_once, make_loss_and_grads
from ckd_jax.workdir.files import remove_file
from ckd_jax.workdir.layout import RunFiles, teacher_run_dir


def _missing_snapshots(run_dir, epochs):
  return [e for e in epochs if not RunFiles(run_dir).snapshot(e).is_dir()]


def run(config, workdir):
  """Trains the teachers that are not finished yet (a finished run has final.json).

  A finished teacher that lost a snapshot is trained again from scratch: the same seed gives the
  same snapshots, so results computed from the others stay current.
  """
  parallel = DataParallel(config.parallel)
  pending = []
  for k in range(config.teacher.num_seeds):
    seed = config.seed + k
    run_dir = teacher_run_dir(workdir, config.teacher.arch, seed)
    files = RunFiles(run_dir)
    if files.is_finished():
      missing = _missing_snapshots(run_dir, config.teacher.snapshot_epochs)
      if not missing:
        logging.info('teacher %s is done; skipping', run_dir)
        continue
      print(
        f'teacher {run_dir}: the snapshots of epochs {missing} are missing; training it again '
        'from scratch to recreate them'
      )
      remove_file(files.final)
    pending.append((seed, run_dir))
  if not pending:
    return
  dataset = load_dataset(config.data)
  teacher_config = config.teacher
  test_split = dataset.test.fingerprint()  # the split that the snapshots' accuracy is on
  runs = [
    Run(
      seed,
      run_dir,
      f'teacher {teacher_config.arch} seed {seed}',
      snapshot_metadata={
        'arch': teacher_config.arch,
        'num_classes': dataset.num_classes,
        'seed': seed,
        'dataset': dataset.name,
        'image_shape': list(dataset.image_shape),
        'test_split': test_split,
      },
    )
    for seed, run_dir in pending
  ]
  spec = RunSpec.from_config(
    config, teacher_config, teacher_config.arch, snapshot_epochs=teacher_config.snapshot_epochs
  )
  loss_and_grads = built_once(
    functools.partial,
    make_loss_and_grads,
    label_smoothing=teacher_config.label_smoothing,
    compute_dtype=config.dtype,
  )
  for run, (_, final) in zip(runs, supervised.train(spec, dataset, runs, parallel, loss_and_grads)):
    print(
      f'teacher {run.run_dir}: last test accuracy {final["last_test_accuracy"]:.4f} '
      f'(best {final["best_test_accuracy"]:.4f} at epoch {final["best_epoch"]})'
    )
