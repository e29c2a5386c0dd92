"""The teacher stage (Algorithm 1, step 1): cross-entropy runs that keep snapshots at fixed epochs.

`teacher.num_seeds` teachers (seeds config.seed + k) give the full ensemble; the snapshots of one
run give the snapshot ensemble and the candidates of the select stage.
"""
from absl import logging

from ckd_jax.data import load_dataset
from ckd_jax.parallel import DataParallel
from ckd_jax.stages.supervised import RunSpec, train_groups, train_models, vectorised_groups
from ckd_jax.training import make_loss_and_grads
from ckd_jax.workdir.files import remove_file
from ckd_jax.workdir.layout import RunFiles, teacher_run_dir


def train_teachers(config, dataset, seeds, run_dirs, parallel, stacked=True):
  """Trains teachers of `config.teacher` with `seeds` (several: one vectorised program when
  `stacked`, else one after another with one compiled step); returns [(state, final record)]."""
  tc = config.teacher
  specs = [RunSpec.from_config(config, tc, tc.arch, seed, f'teacher {tc.arch} seed {seed}',
                               snapshot_epochs=tc.snapshot_epochs) for seed in seeds]
  test_split = dataset.test.fingerprint()  # the split that the snapshots' accuracy is on
  metadata = [{'arch': tc.arch, 'num_classes': dataset.num_classes, 'seed': seed,
               'dataset': dataset.name, 'image_shape': list(dataset.image_shape),
               'test_split': test_split} for seed in seeds]
  return train_models(specs, dataset, run_dirs, parallel,
                      lambda model: make_loss_and_grads(model, tc.label_smoothing, config.dtype),
                      snapshot_metadata=metadata, stacked=stacked)


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
      print(f'teacher {run_dir}: the snapshots of epochs {missing} are missing; training it again '
            'from scratch to recreate them')
      remove_file(files.final)
    pending.append((seed, run_dir))
  if not pending:
    return
  dataset = load_dataset(config.data)
  vectorize = config.teacher.vectorize  # else one after another, with one compiled step
  groups = vectorised_groups(pending, config.vectorize_max_runs) if vectorize else [pending]

  def train_group(group):
    return train_teachers(config, dataset, [seed for seed, _ in group],
                          [run_dir for _, run_dir in group], parallel, stacked=vectorize)
  for group, results in train_groups(groups, train_group, stacked=vectorize):
    for (_, run_dir), (_, final) in zip(group, results):
      print(f'teacher {run_dir}: last test accuracy {final["last_test_accuracy"]:.4f} '
            f'(best {final["best_test_accuracy"]:.4f} at epoch {final["best_epoch"]})')
