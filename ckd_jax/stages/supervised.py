"""The training of a stage's runs, shared by teachers and students: grouped once, then looped.

The runs of one call share a `RunSpec` (a model from the zoo, the optimizer and schedule of its
recipe, the data handling), one step built from a `loss_and_grads` factory (cross-entropy or KD)
and one evaluator on the test split; each `Run` has its own seed, files and step constants.
"""

import dataclasses
import functools
import json
import pathlib
from typing import Any

import jax
import ml_collections
import numpy as np

from ckd_jax import training
from ckd_jax.checkpoints import ResumeStore
from ckd_jax.data import make_train_batches, steps_per_epoch
from ckd_jax.models import get_model
from ckd_jax.training import (
  LoopOptions,
  LoopRun,
  Step,
  built_once,
  create_train_state,
  make_eval_step,
  make_evaluator,
  make_optimizer,
  make_schedule,
  make_train_step,
  model_predict,
)


@dataclasses.dataclass(frozen=True)
class RunSpec:
  """What the runs of one stage share, from the config: the model, its recipe, the data handling
  and the display. Runs trained with one spec differ only in their `Run` records."""

  arch: str
  epochs: int
  batch_size: int
  optimizer: Any  # a ConfigDict: learning_rate, momentum, nesterov, weight_decay, schedule, …
  checkpoint_every_steps: int
  steps_per_call: int
  crop_padding: int
  flip: bool
  eval_batch_size: int
  sync_batch_norm: bool
  progress: bool
  tensorboard: bool
  vectorize: bool  # train runs together as ONE program (stacked states), else one after another
  max_runs: int  # the most runs in one stacked program (0: no limit)
  snapshot_epochs: tuple = ()

  @classmethod
  def from_config(cls, config, recipe, arch, snapshot_epochs=()):
    """`recipe` is the config section with epochs, batch_size, optimizer (teacher or distill)."""
    return cls(
      arch=arch,
      epochs=recipe.epochs,
      batch_size=recipe.batch_size,
      optimizer=recipe.optimizer,
      checkpoint_every_steps=recipe.checkpoint_every_steps,
      steps_per_call=config.steps_per_call,
      crop_padding=config.data.crop_padding,
      flip=config.data.flip,
      eval_batch_size=config.data.eval_batch_size,
      sync_batch_norm=config.sync_batch_norm,
      progress=config.progress,
      tensorboard=config.tensorboard,
      vectorize=recipe.vectorize,
      max_runs=config.vectorize_max_runs,
      snapshot_epochs=tuple(snapshot_epochs),
    )


@dataclasses.dataclass(frozen=True)
class Run:
  """One run of a stage: its seed, directory and display name, the constants its step's `prepare`
  takes (a student's teachers' variables), and what its files record besides the metrics."""

  seed: int
  run_dir: pathlib.Path
  description: str
  constants: tuple = ()
  snapshot_metadata: dict = dataclasses.field(default_factory=dict)
  final_info: dict = dataclasses.field(default_factory=dict)


def train(spec, dataset, runs, parallel, loss_and_grads_factory, prepare=None):
  """Trains the `Run`s `runs` of `spec` with the step of `loss_and_grads_factory(model)` (and
  `prepare(batch, *run.constants)` before it: see `training.Step`); returns [(state, final
  record)] in the order of `runs`.

  With `spec.vectorize` the runs train in groups as ONE program each (`_groups`), else one after
  another; either way they share one compiled step and evaluator, as do all the calls of a process
  with equal settings and an equal factory (`built_once`: the distill stage's groups of students,
  a stage run again in the same process).

  A stacked program's memory grows with its runs, and how much a device has is known only when the
  program is compiled and run there: a group that does not fit (XLA's RESOURCE_EXHAUSTED) is split
  in two and trained again, each half resuming its runs from their own last checkpoints (none yet
  if the first step failed). A single run that does not fit fails as it would alone.
  """
  bn_axis = parallel.axis_name if spec.sync_batch_norm else None
  # one module object per architecture: the TrainState holds its `apply` (a static field), and a
  # bound method of another, equal module would make the shared step trace again
  model = built_once(get_model, spec.arch, dataset.num_classes, axis_name=bn_axis)
  per_epoch = steps_per_epoch(len(dataset.train), spec.batch_size)
  tx = _optimizer(spec.optimizer.to_json(), per_epoch, spec.epochs)
  loss_and_grads = built_once(loss_and_grads_factory, model)
  step = Step(
    update=built_once(make_train_step, loss_and_grads, parallel.axis_name), prepare=prepare
  )
  eval_model = built_once(get_model, spec.arch, dataset.num_classes)
  eval_step = built_once(make_eval_step, built_once(model_predict, eval_model), parallel.axis_name)
  evaluate = make_evaluator(
    eval_step, dataset.test, spec.eval_batch_size, dataset.mean, dataset.std, parallel
  )
  learning_rate_fn = make_schedule(spec.optimizer, per_epoch, spec.epochs)
  results, pending = {}, _groups(runs, spec.vectorize, spec.max_runs)
  while pending:
    group = pending.pop(0)
    options = LoopOptions(
      num_epochs=spec.epochs,
      snapshot_epochs=spec.snapshot_epochs,
      checkpoint_every_steps=spec.checkpoint_every_steps,
      steps_per_call=spec.steps_per_call,
      progress=spec.progress,
      tensorboard=spec.tensorboard,
      description=group[0].description
      if len(group) == 1
      else f'{len(group)} stacked runs of {spec.arch}',
    )
    loop_runs = [
      LoopRun(
        run_dir=run.run_dir,
        state=create_train_state(model, tx, dataset.image_shape, run.seed),
        batches=make_train_batches(
          dataset.train,
          spec.batch_size,
          dataset.mean,
          dataset.std,
          spec.crop_padding,
          spec.flip,
          run.seed,
          rows=parallel.process_rows(spec.batch_size),
        ),
        constants=run.constants,
        description=run.description,
        snapshot_metadata=run.snapshot_metadata,
        final_info=run.final_info,
      )
      for run in group
    ]
    try:
      done = training.train(loop_runs, step, evaluate, parallel, options, learning_rate_fn)
    except jax.errors.JaxRuntimeError as e:
      if len(group) < 2 or 'RESOURCE_EXHAUSTED' not in str(e):
        raise
      half = (len(group) + 1) // 2
      print(
        f'{len(group)} stacked runs do not fit in the device memory: training them as '
        f'{half} and {len(group) - half} (vectorize_max_runs={half} starts there)'
      )
      pending[:0] = [group[:half], group[half:]]
      continue
    results.update((run.run_dir, result) for run, result in zip(group, done))
  return [results[run.run_dir] for run in runs]


def _groups(runs, vectorize, max_runs):
  """The groups that train together, in order: each run alone, or (`vectorize`) the runs that can
  stack, in chunks of `max_runs` (0: no limit). Runs stack when their resume checkpoints stand at
  the same step (a kill during a group's checkpoint can leave them apart) and their constants
  have the same shapes (students with as many teachers)."""
  if not vectorize:
    return [[run] for run in runs]
  stackable = {}
  for run in runs:
    key = (
      ResumeStore(run.run_dir).latest_step(),
      jax.tree.structure(run.constants),
      tuple(np.shape(x) for x in jax.tree.leaves(run.constants)),
    )
    stackable.setdefault(key, []).append(run)
  size = max_runs or len(runs)
  return [same[i : i + size] for same in stackable.values() for i in range(0, len(same), size)]


@functools.lru_cache(maxsize=8)
def _optimizer(optimizer_json, steps_per_epoch, epochs):
  """One optimizer object per recipe in a process: it is a static field of the TrainState, so a new
  one would make the shared step trace again (and its state's initialisation compile again)."""
  return make_optimizer(
    ml_collections.ConfigDict(json.loads(optimizer_json)), steps_per_epoch, epochs
  )
