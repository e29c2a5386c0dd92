"""The stages of a run, each a function (config, workdir) that reads and writes only the workdir.

Finished work is skipped (a run with `final.json` is done), unfinished work resumes, so rerunning
the same command after a kill continues where it stopped.
"""
import pathlib

from absl import logging

from ckd_jax import config_checks
from ckd_jax.data import load_dataset
from ckd_jax.parallel import DataParallel
from ckd_jax.teacher import train_teacher


def teacher_run_dir(workdir, arch, seed):
  return pathlib.Path(workdir) / 'teachers' / f'{arch}_seed{seed}'


def teacher_stage(config, workdir):
  """Trains `config.teacher.num_seeds` teachers (seeds config.seed + k) with snapshots."""
  parallel = DataParallel(config.parallel)
  dataset = None
  for k in range(config.teacher.num_seeds):
    seed = config.seed + k
    run_dir = teacher_run_dir(workdir, config.teacher.arch, seed)
    if (run_dir / 'final.json').exists():
      logging.info('teacher %s is done; skipping', run_dir)
      continue
    dataset = dataset or load_dataset(config.data)
    _, final = train_teacher(config, dataset, seed, run_dir, parallel)
    print(f'teacher {run_dir}: last test accuracy {final["last_test_accuracy"]:.4f} '
          f'(best {final["best_test_accuracy"]:.4f} at epoch {final["best_epoch"]})')


STAGES = {'teacher': teacher_stage}


def run(config, workdir, allow_config_change=False):
  """Validates everything first, records the config, then runs `config.stages` in order."""
  config_checks.validate(config)
  stages = config_checks.parse_stages(config.stages)
  if config.parallel == 'pmap':
    parallel = DataParallel('pmap')
    parallel.check_batch_size(config.teacher.batch_size, 'teacher.batch_size')
    parallel.check_batch_size(config.data.eval_batch_size, 'data.eval_batch_size')
  config_checks.check_workdir(config, workdir, allow_config_change)
  for stage in stages:
    STAGES[stage](config, workdir)
