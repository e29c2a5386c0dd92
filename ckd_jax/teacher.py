"""Teacher training: a cross-entropy run of the epoch loop that keeps snapshots (Algorithm 1, step 1)."""
from ckd_jax.data import TrainBatches
from ckd_jax.models import get_model
from ckd_jax.training import (create_train_state, make_eval_step, make_evaluator,
                              make_loss_and_grads, make_optimizer, make_schedule, make_train_step,
                              train)


def train_teacher(config, dataset, seed, run_dir, parallel):
  """Trains one teacher of `config.teacher` with `seed`; returns (state, final record)."""
  tc = config.teacher
  parallel.check_batch_size(tc.batch_size)
  bn_axis = parallel.axis_name if config.sync_batch_norm else None
  model = get_model(tc.arch, dataset.num_classes, axis_name=bn_axis)
  eval_model = get_model(tc.arch, dataset.num_classes)
  batches = TrainBatches(dataset.train, tc.batch_size, dataset.mean, dataset.std,
                         config.data.crop_padding, config.data.flip, seed)
  tx = make_optimizer(tc.optimizer, batches.steps_per_epoch, tc.epochs)
  state = create_train_state(model, tx, dataset.image_shape, seed)
  train_step = make_train_step(make_loss_and_grads(model, tc.label_smoothing), parallel.axis_name)
  evaluate = make_evaluator(make_eval_step(eval_model, parallel.axis_name), dataset.test,
                            config.data.eval_batch_size, dataset.mean, dataset.std, parallel)
  metadata = {'arch': tc.arch, 'num_classes': dataset.num_classes, 'seed': seed,
              'dataset': dataset.name, 'image_shape': list(dataset.image_shape)}
  return train(run_dir=run_dir, state=state, train_step=train_step, evaluate=evaluate,
               batches=batches, num_epochs=tc.epochs, parallel=parallel,
               snapshot_epochs=tuple(tc.snapshot_epochs), snapshot_metadata=metadata,
               checkpoint_every_steps=tc.checkpoint_every_steps,
               learning_rate_fn=make_schedule(tc.optimizer, batches.steps_per_epoch, tc.epochs),
               progress=config.progress, tensorboard=config.tensorboard, description=f'teacher {tc.arch} seed {seed}')
