"""The distill stage (Algorithm 1, step 4): students from each teacher choice, or CE alone.

The frozen teacher snapshots of a choice are restored once as ONE stacked pytree. Before each
student step, a program of its own runs all of them in one compiled loop (`lax.map`) and adds their
soft targets to the batch; the student step, which takes no teacher, compiles once for all choices.
"""

import dataclasses
import functools
import itertools
import pathlib
import shutil
from typing import Optional

from ckd_jax.checkpoints import SnapshotStore, restore_stacked, snapshot_digests
from ckd_jax.data import load_dataset, steps_per_epoch
from ckd_jax.data_parallel import DataParallel
from ckd_jax.distributed import is_primary
from ckd_jax.models import get_model
from ckd_jax.stages import console, select, supervised, teacher_choices
from ckd_jax.stages.supervised import Run, RunSpec
from ckd_jax.training import (
  built_once,
  ensemble_predict,
  make_distillation_loss_and_grads,
  make_eval_step,
  make_evaluator,
  make_loss_and_grads,
  make_teacher_forward,
  make_teacher_targets,
)
from ckd_jax.workdir.files import read_json, remove_tree, write_json
from ckd_jax.workdir.layout import RunFiles, student_run_dir


def check_members(choice, members, teacher_arch, num_classes):
  """Refuses, before any training, snapshots that are missing or do not fit the student."""
  for run_dir, epoch in members:
    SnapshotStore(run_dir).check_fits(
      epoch, teacher_arch, num_classes, f'teacher choice {choice.spec!r}'
    )


class FrozenTeacher:
  """A teacher choice restored from its snapshots: stacked variables and the choice's own test
  accuracy on the current test split (an ensemble predicts with averaged probabilities)."""

  def __init__(self, config, dataset, members, parallel):
    self.variables, self.metadata = restore_stacked(members)
    same_split = self.metadata[0].get('test_split') == dataset.test.fingerprint()
    if len(members) == 1 and same_split:  # measured on this very split when it was saved
      self.test_accuracy = self.metadata[0]['test_accuracy']
      return
    # An ensemble, or a snapshot measured on another split (the data config changed since).
    eval_forward = built_once(
      make_teacher_forward, get_model(config.teacher.arch, dataset.num_classes)
    )
    predict = built_once(ensemble_predict, eval_forward, config.distill.ensemble_mode)
    evaluate = make_evaluator(
      built_once(make_eval_step, predict, parallel.axis_name),
      dataset.test,
      config.data.eval_batch_size,
      dataset.mean,
      dataset.std,
      parallel,
      single_pass=True,
    )
    self.test_accuracy = evaluate(self.variables)['test_accuracy']

  def info(self, choice):
    return {
      'teacher_choice': choice.spec,
      'teacher_test_accuracy': self.test_accuracy,
      'teacher_members': [
        {
          'seed': m['seed'],
          'epoch': m['epoch'],
          'test_accuracy': m['test_accuracy'],
          'digest': m['digest'],
        }
        for m in self.metadata
      ],
    }


class StudentSteps:
  """What the students of one distill stage train with: the cross-entropy step (no teacher), the
  KD step and the teachers' targets (which compile once per member count). Built with
  `built_once`, so that every student with the same settings shares the compiled programs."""

  def __init__(self, config, dataset):
    distill_config = config.distill
    kd_until_step = (
      distill_config.kd_until_epoch * steps_per_epoch(len(dataset.train), distill_config.batch_size)
      if distill_config.kd_until_epoch
      else None
    )
    self.cross_entropy = built_once(
      functools.partial,
      make_loss_and_grads,
      label_smoothing=distill_config.label_smoothing,
      compute_dtype=config.dtype,
    )
    self.distillation = built_once(
      functools.partial,
      make_distillation_loss_and_grads,
      alpha=distill_config.alpha,
      temperature=distill_config.temperature,
      kd_until_step=kd_until_step,
      compute_dtype=config.dtype,
    )
    teacher_forward = built_once(
      make_teacher_forward,
      get_model(config.teacher.arch, dataset.num_classes),
      distill_config.teacher_train_mode_batch_norm,
    )
    self.teacher_targets = built_once(
      make_teacher_targets,
      teacher_forward,
      distill_config.temperature,
      distill_config.ensemble_mode,
      config.dtype,
    )


@dataclasses.dataclass(frozen=True)
class StudentRun:
  """One student to train: its teacher choice, the restored teacher (None: no teacher), its seed."""

  choice: teacher_choices.TeacherChoice
  teacher: Optional[FrozenTeacher]
  seed: int
  run_dir: pathlib.Path


def train_students(config, dataset, runs, parallel, steps):
  """Trains the `StudentRun`s `runs` of `config.distill` with `steps` (a `StudentSteps`), in order:
  a student without a teacher with cross-entropy, the others by KD from their own teachers."""
  distill_config = config.distill
  spec = RunSpec.from_config(config, distill_config, distill_config.student)
  for has_teacher, block in itertools.groupby(runs, lambda run: run.teacher is not None):
    block = [
      Run(
        run.seed,
        run.run_dir,
        f'{distill_config.student} from {run.choice.spec} seed {run.seed}',
        constants=(run.teacher.variables,) if has_teacher else (),
        final_info={
          **(run.teacher.info(run.choice) if has_teacher else {'teacher_choice': run.choice.spec}),
          'student': distill_config.student,
          'seed': run.seed,
        },
      )
      for run in block
    ]
    if has_teacher:
      supervised.train(spec, dataset, block, parallel, steps.distillation, steps.teacher_targets)
    else:
      supervised.train(spec, dataset, block, parallel, steps.cross_entropy)


def copy_student(source_dir, target_dir, choice_spec):
  """A finished student's run under another teacher choice's name (the same snapshots and seed):
  its files copied, final.json last (what marks a run finished), naming the choice and source."""
  source, target = RunFiles(source_dir), RunFiles(target_dir)
  remove_tree(target.dir)
  shutil.copytree(source.dir, target.dir, ignore=shutil.ignore_patterns('resume', 'final.json*'))
  final = read_json(source.final)
  write_json(target.final, {**final, 'teacher_choice': choice_spec, 'copied_from': str(source.dir)})
  print(f'student {target.dir}: the same snapshots and seed as {source.dir}, copied')


def _learnt_from(files):
  """The digests of the snapshots a finished student learnt from ([] for no teacher)."""
  return [m.get('digest') for m in read_json(files.final).get('teacher_members', [])]


def run(config, workdir):
  """Trains `distill.num_seeds` students per teacher choice; current students are skipped.

  Every choice's snapshots are checked before the first student trains.
  """
  parallel = DataParallel(config.parallel)
  distill_config = config.distill
  seeds = [config.seed + k for k in range(distill_config.num_seeds)]
  dataset = None
  plan, copies = [], []
  first_with = {}  # member digests -> the first choice that learns from exactly those snapshots
  choices = teacher_choices.parse_all(distill_config.teachers, config.teacher)
  if any(choice.kind == 'selected' for choice in choices):
    select.check_current(config, workdir)
  for choice in choices:
    members = teacher_choices.member_paths(choice, workdir, config.teacher, config.seed)
    digests = list(snapshot_digests(members).values())
    pending = []
    for seed in seeds:
      files = RunFiles(student_run_dir(workdir, distill_config.student, choice.slug, seed))
      # (a missing snapshot makes no finished student stale: the teacher stage recreates it)
      finished = files.is_finished()
      if finished and None not in digests and _learnt_from(files) != digests:
        print(f'student {files.dir} is stale (its teacher snapshots changed): training it again')
        remove_tree(files.dir)  # (every process decides from what it read before this)
        finished = False
      if not finished:
        pending.append(seed)
    known = digests and None not in digests
    same = first_with.setdefault(tuple(digests), choice) if known else None
    if pending and same is not None and same is not choice:
      # Same snapshots, same seeds: the students would be identical (training is deterministic),
      # e.g. `selected` and the `epoch:E` it chose. They are copied once the first has trained.
      copies += [(same, choice, seed) for seed in pending]
      pending = []
    if pending:
      dataset = dataset or load_dataset(config.data)
      check_members(choice, members, config.teacher.arch, dataset.num_classes)
    plan.append((choice, members, pending))
  runs = []
  for choice, members, pending in plan:
    teacher = FrozenTeacher(config, dataset, members, parallel) if members and pending else None
    runs += [
      StudentRun(
        choice, teacher, seed, student_run_dir(workdir, distill_config.student, choice.slug, seed)
      )
      for seed in pending
    ]
  if runs:
    train_students(config, dataset, runs, parallel, StudentSteps(config, dataset))
  if is_primary():
    for source, target, seed in copies:
      copy_student(
        student_run_dir(workdir, distill_config.student, source.slug, seed),
        student_run_dir(workdir, distill_config.student, target.slug, seed),
        target.spec,
      )
  if is_primary():  # (it reads the students' final.json, which process 0 writes)
    print(console.students_table(workdir))
