"""One supervised run of the epoch loop, shared by teachers and students.

A run is: a model from the zoo, the optimizer and schedule of its config section, on-device batches,
a step built from a `loss_and_grads` factory (cross-entropy or KD), and an evaluator on the test split.
"""
from ckd_jax.data import TrainBatches
from ckd_jax.models import get_model
from ckd_jax.training import (create_train_state, make_eval_step, make_evaluator, make_optimizer,
                              make_schedule, make_train_step, model_predict, train)


def train_model(*, arch, section, config, dataset, seed, run_dir, parallel, loss_and_grads_factory,
                step_inputs=(), snapshot_epochs=(), snapshot_metadata=None, final_info=None,
                description=''):
  """Trains `arch` with the recipe in `section` (epochs, batch_size, optimizer, checkpointing).

  `loss_and_grads_factory(model) -> loss_and_grads`. Returns (final state, final record).
  """
  parallel.check_batch_size(section.batch_size)
  bn_axis = parallel.axis_name if config.sync_batch_norm else None
  model = get_model(arch, dataset.num_classes, axis_name=bn_axis)
  batches = TrainBatches(dataset.train, section.batch_size, dataset.mean, dataset.std,
                         config.data.crop_padding, config.data.flip, seed)
  tx = make_optimizer(section.optimizer, batches.steps_per_epoch, section.epochs)
  state = create_train_state(model, tx, dataset.image_shape, seed)
  train_step = make_train_step(loss_and_grads_factory(model), parallel.axis_name)
  eval_step = make_eval_step(model_predict(get_model(arch, dataset.num_classes)), parallel.axis_name)
  evaluate = make_evaluator(eval_step, dataset.test, config.data.eval_batch_size, dataset.mean,
                            dataset.std, parallel)
  return train(run_dir=run_dir, state=state, train_step=train_step, evaluate=evaluate,
               batches=batches, num_epochs=section.epochs, parallel=parallel,
               step_inputs=step_inputs, snapshot_epochs=tuple(snapshot_epochs),
               snapshot_metadata=snapshot_metadata, final_info=final_info,
               checkpoint_every_steps=section.checkpoint_every_steps,
               learning_rate_fn=make_schedule(section.optimizer, batches.steps_per_epoch,
                                              section.epochs),
               progress=config.progress, tensorboard=config.tensorboard,
               description=description or f'{arch} seed {seed}')
