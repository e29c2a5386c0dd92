"""Teacher training: a cross-entropy run that keeps snapshots (Algorithm 1, step 1)."""
from ckd_jax.runs import train_model
from ckd_jax.training import make_loss_and_grads


def train_teacher(config, dataset, seed, run_dir, parallel):
  """Trains one teacher of `config.teacher` with `seed`; returns (state, final record)."""
  tc = config.teacher
  metadata = {'arch': tc.arch, 'num_classes': dataset.num_classes, 'seed': seed,
              'dataset': dataset.name, 'image_shape': list(dataset.image_shape)}
  return train_model(
      arch=tc.arch, section=tc, config=config, dataset=dataset, seed=seed, run_dir=run_dir,
      parallel=parallel,
      loss_and_grads_factory=lambda model: make_loss_and_grads(model, tc.label_smoothing),
      snapshot_epochs=tc.snapshot_epochs, snapshot_metadata=metadata,
      description=f'teacher {tc.arch} seed {seed}')
