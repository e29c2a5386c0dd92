"""Student training: KD from a teacher choice (a snapshot or an ensemble of snapshots), or CE alone.

The frozen teacher snapshots are restored once per choice as ONE stacked pytree and passed to the
jitted (or pmapped) student step, which runs all teachers with a single vmapped forward.
"""
from ckd_jax.checkpoints import SnapshotStore, restore_stacked
from ckd_jax.data import steps_per_epoch
from ckd_jax.models import get_model
from ckd_jax.runs import train_model
from ckd_jax.training import (ensemble_predict, make_eval_step, make_evaluator,
                              make_kd_loss_and_grads, make_loss_and_grads, make_teacher_forward)


def check_members(choice, members, teacher_arch, num_classes):
  """Refuses, before any training, snapshots that are missing or do not fit the student."""
  for run_dir, epoch in members:
    store = SnapshotStore(run_dir)
    if epoch not in store.epochs():
      raise ValueError(f'teacher choice {choice.spec!r} needs the snapshot of epoch {epoch} in '
                       f'{run_dir}, which does not exist: run the teacher stage first')
    meta = store.metadata(epoch)
    if meta.get('arch') != teacher_arch:
      raise ValueError(f'snapshot {run_dir}/snapshots/{epoch} is a {meta.get("arch")}, but '
                       f'config.teacher.arch is {teacher_arch}')
    if meta.get('num_classes') != num_classes:
      raise ValueError(f'snapshot {run_dir}/snapshots/{epoch} has {meta.get("num_classes")} '
                       f'classes, the student {num_classes}')


class Teacher:
  """A restored teacher choice: stacked variables, its forward, and its own test accuracy."""

  def __init__(self, config, dataset, members, parallel):
    self.variables, self.metadata = restore_stacked(members)
    model = get_model(config.teacher.arch, dataset.num_classes)
    dc = config.distill
    self.forward = make_teacher_forward(model, dc.teacher_train_mode_batch_norm)
    eval_forward = make_teacher_forward(model)
    evaluate = make_evaluator(
        make_eval_step(ensemble_predict(eval_forward, dc.ensemble_mode), parallel.axis_name),
        dataset.test, config.data.eval_batch_size, dataset.mean, dataset.std, parallel)
    self.test_accuracy = evaluate(self.variables)['test_accuracy']

  def info(self, choice):
    return {'teacher_choice': choice.spec, 'teacher_test_accuracy': self.test_accuracy,
            'teacher_members': [{'seed': m['seed'], 'epoch': m['epoch'],
                                 'test_accuracy': m['test_accuracy']} for m in self.metadata]}


def train_student(config, dataset, choice, teacher, seed, run_dir, parallel):
  """Trains one student of `config.distill`; `teacher` is a `Teacher` or None (CE baseline)."""
  dc = config.distill
  if teacher is None:
    factory = lambda model: make_loss_and_grads(model, dc.label_smoothing)
    inputs, info = (), {'teacher_choice': choice.spec}
  else:
    kd_until_step = (dc.kd_until_epoch * steps_per_epoch(len(dataset.train), dc.batch_size)
                     if dc.kd_until_epoch else None)
    factory = lambda model: make_kd_loss_and_grads(model, teacher.forward, dc.alpha,
                                                   dc.temperature, dc.ensemble_mode, kd_until_step)
    inputs, info = (teacher.variables,), teacher.info(choice)
  return train_model(
      arch=dc.student, section=dc, config=config, dataset=dataset, seed=seed, run_dir=run_dir,
      parallel=parallel, loss_and_grads_factory=factory, step_inputs=inputs,
      final_info={**info, 'student': dc.student, 'seed': seed},
      description=f'{dc.student} from {choice.spec} seed {seed}')
