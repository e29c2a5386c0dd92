"""The stages of a run, each a function (config, workdir) that reads and writes only the workdir.

Finished work is skipped (a run with `final.json` is done), unfinished work resumes, so rerunning
the same command after a kill continues where it stopped.
"""
import json
import pathlib
import platform
import sys
import time
from importlib import metadata

from absl import logging

import ckd_jax
from ckd_jax import checkpoints, config_checks, report, teacher_choices
from ckd_jax.data import load_dataset
from ckd_jax.distill import Teacher, check_members, train_student
from ckd_jax.parallel import DataParallel
from ckd_jax.selection_stage import run_selection, write_selection
from ckd_jax.teacher import train_teacher
from ckd_jax.workdir import selection_path, student_run_dir, teacher_run_dir
from ckd_jax.workdir_lock import workdir_lock


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


def select_stage(config, workdir):
  """Estimates MI over the snapshots of teacher seed config.seed and picks T*."""
  if selection_path(workdir).exists():
    logging.info('selection %s exists; skipping', selection_path(workdir))
  else:
    dataset = load_dataset(config.data)
    write_selection(run_selection(config, dataset, teacher_run_dir(
        workdir, config.teacher.arch, config.seed)), workdir)
  result = json.loads(selection_path(workdir).read_text())
  print(f'{"epoch":>6} {"teacher acc":>11} {"I(X;F)":>10} {"I(Y;F)":>10} {"score":>7}   '
        f'({result["estimator"]["method"]}, nats)')
  for s in result['snapshots']:
    print(f'{s["epoch"]:>6} {100 * s["teacher_test_accuracy"]:>11.2f} {s["I_XF"]:>10.4f} '
          f'{s["I_YF"]:>10.4f} {s["score"]:>7.3f}' + ('   <- T*' if s['epoch'] ==
                                                       result['chosen_epoch'] else ''))
  print(f'selected T* = epoch {result["chosen_epoch"]}: {selection_path(workdir)} and mi.png')


def distill_stage(config, workdir):
  """Trains `config.distill.num_seeds` students per teacher choice (KD, or CE for 'none')."""
  parallel = DataParallel(config.parallel)
  dc = config.distill
  choices = teacher_choices.parse_all(dc.teachers, config.teacher)
  seeds = [config.seed + k for k in range(dc.num_seeds)]
  dataset = None
  plan = []
  for choice in choices:
    members = teacher_choices.member_paths(choice, workdir, config.teacher, config.seed)
    pending = [s for s in seeds
               if not (student_run_dir(workdir, dc.student, choice, s) / 'final.json').exists()]
    if pending:
      dataset = dataset or load_dataset(config.data)
      check_members(choice, members, config.teacher.arch, dataset.num_classes)
    plan.append((choice, members, pending))
  for choice, members, pending in plan:
    if not pending:
      continue
    teacher = Teacher(config, dataset, members, parallel) if members else None
    for seed in pending:
      train_student(config, dataset, choice, teacher, seed,
                    student_run_dir(workdir, dc.student, choice, seed), parallel)
  _print_distill_summary(config, workdir)


def _print_distill_summary(config, workdir):
  """Student accuracy per teacher choice, and plainly whether KD beat the no-KD baseline."""
  summary = report.student_summary(report.collect(workdir, json.loads(config.to_json())))
  print(f'{"teacher choice":<32} {"teacher acc":>11} {"student last":>15} {"student best":>15}')
  for choice, entry in summary.items():
    teacher = '' if entry['teacher'] == '' else f'{100 * entry["teacher"]:.2f}'
    print(f'{choice:<32} {teacher:>11} {report.format_pct(entry["last"]):>15} '
          f'{report.format_pct(entry["best"]):>15}')
  winners = report.kd_winners(summary)
  if winners is not None:
    print('KD beat the no-KD baseline (last-epoch accuracy, mean over seeds) with: '
          + (', '.join(winners) if winners else 'no teacher choice'))


def report_stage(config, workdir):
  """Rebuilds report.md, results.csv and the plots from the workdir (cheap: always redone)."""
  del config
  print(f'report: {report.build_report(workdir)}')


STAGES = {'teacher': teacher_stage, 'select': select_stage, 'distill': distill_stage,
          'report': report_stage}


def run(config, workdir, allow_config_change=False):
  """Validates everything first, records the config, then runs `config.stages` in order."""
  config_checks.validate(config)
  stages = config_checks.parse_stages(config.stages)
  if config.parallel == 'pmap':
    parallel = DataParallel('pmap')
    for stage in stages:
      if stage in ('teacher', 'distill'):
        parallel.check_batch_size(config[stage].batch_size, f'{stage}.batch_size')
    parallel.check_batch_size(config.data.eval_batch_size, 'data.eval_batch_size')
  with workdir_lock(workdir):
    config_checks.check_workdir(config, workdir, allow_config_change)
    for stage in stages:
      start = time.time()
      STAGES[stage](config, workdir)
      _record_stage(workdir, stage, start)


MANIFEST_PACKAGES = ('jax', 'jaxlib', 'flax', 'optax', 'orbax-checkpoint', 'numpy')


def _record_stage(workdir, stage, start):
  """manifest.json: when each stage last finished, how long it took, and the software used."""
  path = pathlib.Path(workdir) / 'manifest.json'
  manifest = json.loads(path.read_text()) if path.exists() else {'stages': {}}
  versions = {'ckd_jax': ckd_jax.__version__}
  for package in MANIFEST_PACKAGES:
    try:
      versions[package] = metadata.version(package)
    except metadata.PackageNotFoundError:
      versions[package] = None
  manifest['stages'][stage] = {'finished_at': time.strftime('%Y-%m-%dT%H:%M:%S%z'),
                               'duration_s': round(time.time() - start, 3)}
  manifest['software'] = {'python': sys.version.split()[0], 'platform': platform.platform(),
                          **versions}
  checkpoints.write_json(path, manifest)
