"""One supervised run, shared by teachers and students: model, batches, optimizer, step, loop.

A run is: a model from the zoo, the optimizer and schedule of its recipe, on-device batches, a step
built from a `loss_and_grads` factory (cross-entropy or KD), and an evaluator on the test split.
"""
import dataclasses
import functools
import json
from typing import Any

import jax
import ml_collections

from ckd_jax.data import make_train_batches, steps_per_epoch
from ckd_jax.models import get_model
from ckd_jax.training import (LoopOptions, create_train_state, make_eval_step, make_evaluator,
                              make_optimizer, make_schedule, make_train_step, model_predict,
                              train_many)


@dataclasses.dataclass(frozen=True)
class RunSpec:
  """What one run takes from the config: the model, its recipe, the data handling and the display."""
  arch: str
  seed: int
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
  snapshot_epochs: tuple = ()
  description: str = ''

  @classmethod
  def from_config(cls, config, recipe, arch, seed, description, snapshot_epochs=()):
    """`recipe` is the config section with epochs, batch_size, optimizer (teacher or distill)."""
    return cls(arch=arch, seed=seed, epochs=recipe.epochs, batch_size=recipe.batch_size,
               optimizer=recipe.optimizer, checkpoint_every_steps=recipe.checkpoint_every_steps,
               steps_per_call=config.steps_per_call,
               crop_padding=config.data.crop_padding, flip=config.data.flip,
               eval_batch_size=config.data.eval_batch_size,
               sync_batch_norm=config.sync_batch_norm, progress=config.progress,
               tensorboard=config.tensorboard, snapshot_epochs=tuple(snapshot_epochs),
               description=description)


def train_models(specs, dataset, run_dirs, parallel, loss_and_grads_factory, *, step_inputs=None,
                 add_targets=None, snapshot_metadata=None, final_info=None, stacked=True):
  """Trains runs that differ only in their seed (and step inputs, e.g. their teachers, which go to
  `add_targets` when given: see `training.train`), with one step: as ONE program (`stacked`:
  `training.train_many`), or one after another sharing the compiled step and evaluator. Lists in,
  [(state, final record)] out.

  The step is built once per (factory, model) in a process: callers that pass the same factory
  (the distill stage, for every group of students) share its compiled program."""
  spec, count = specs[0], len(specs)
  if any(dataclasses.replace(s, seed=spec.seed, description='') !=
         dataclasses.replace(spec, description='') for s in specs):
    raise ValueError('runs trained together must differ only in their seed')
  bn_axis = parallel.axis_name if spec.sync_batch_norm else None
  model = get_model(spec.arch, dataset.num_classes, axis_name=bn_axis)
  per_epoch = steps_per_epoch(len(dataset.train), spec.batch_size)
  tx = _optimizer(spec.optimizer.to_json(), per_epoch, spec.epochs)
  train_step = _train_step(loss_and_grads_factory, model, parallel.axis_name)
  eval_step = make_eval_step(model_predict(get_model(spec.arch, dataset.num_classes)),
                             parallel.axis_name)
  evaluate = make_evaluator(eval_step, dataset.test, spec.eval_batch_size, dataset.mean,
                            dataset.std, parallel)
  learning_rate_fn = make_schedule(spec.optimizer, per_epoch, spec.epochs)
  step_inputs = step_inputs or [()] * count
  snapshot_metadata, final_info = snapshot_metadata or [None] * count, final_info or [None] * count
  results = []
  for group in ([list(range(count))] if stacked else [[i] for i in range(count)]):
    descriptions = [specs[i].description or f'{spec.arch} seed {specs[i].seed}' for i in group]
    options = LoopOptions(num_epochs=spec.epochs, snapshot_epochs=spec.snapshot_epochs,
                          checkpoint_every_steps=spec.checkpoint_every_steps,
                          steps_per_call=spec.steps_per_call,
                          progress=spec.progress, tensorboard=spec.tensorboard,
                          description=descriptions[0] if len(group) == 1 else
                          f'{len(group)} runs of {spec.arch} (vectorised)')
    batches = [make_train_batches(dataset.train, spec.batch_size, dataset.mean, dataset.std,
                                  spec.crop_padding, spec.flip, specs[i].seed,
                                  rows=parallel.process_rows(spec.batch_size)) for i in group]
    states = [create_train_state(model, tx, dataset.image_shape, specs[i].seed) for i in group]
    results += train_many([run_dirs[i] for i in group], states, train_step, evaluate, batches,
                          parallel, options, step_inputs=[step_inputs[i] for i in group],
                          add_targets=add_targets,
                          learning_rate_fn=learning_rate_fn,
                          snapshot_metadata=[snapshot_metadata[i] for i in group],
                          final_info=[final_info[i] for i in group], descriptions=descriptions)
  return results


@functools.lru_cache(maxsize=8)
def _optimizer(optimizer_json, steps_per_epoch, epochs):
  """One optimizer object per recipe in a process: it is a static field of the TrainState, so a new
  one would make the shared step trace again (and its state's initialisation compile again)."""
  return make_optimizer(ml_collections.ConfigDict(json.loads(optimizer_json)), steps_per_epoch,
                        epochs)


@functools.lru_cache(maxsize=8)
def _train_step(loss_and_grads_factory, model, axis_name):
  return make_train_step(loss_and_grads_factory(model), axis_name)


def vectorised_groups(runs, max_runs=0):
  """The runs to stack into one program: all, in chunks of `max_runs` (0: no limit)."""
  size = max_runs or len(runs)
  return [runs[i:i + size] for i in range(0, len(runs), size)]


def train_groups(groups, train_group, stacked):
  """Yields (group, train_group(group)) for each group of runs, in order.

  A stacked program's memory grows with its runs, and how much a device has is known only when the
  program is compiled and run there: a `stacked` group that does not fit (XLA's RESOURCE_EXHAUSTED)
  is split in two and trained again, each half resuming its runs from their own last checkpoints
  (none yet if the first step failed). A single run that does not fit fails as it would alone."""
  pending = list(groups)
  while pending:
    group = pending.pop(0)
    try:
      results = train_group(group)
    except jax.errors.JaxRuntimeError as e:
      if not stacked or len(group) < 2 or 'RESOURCE_EXHAUSTED' not in str(e):
        raise
      half = (len(group) + 1) // 2
      print(f'{len(group)} stacked runs do not fit in the device memory: training them as '
            f'{half} and {len(group) - half} (vectorize_max_runs={half} starts there)')
      pending[:0] = [group[:half], group[half:]]
      continue
    yield group, results
