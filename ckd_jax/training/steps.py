"""Pure train/eval step builders. They know nothing of files, loops or devices.

With `axis_name` set the steps run under `pmap`: gradients, metrics and BatchNorm statistics are
averaged over devices. Models built with the same `axis_name` also synchronise BatchNorm batch
statistics, which makes a pmapped step equal to the single-device step on the same global batch.
"""
import jax
import jax.numpy as jnp

from ckd_jax import losses


def _mean_over_devices(tree, axis_name):
  return jax.lax.pmean(tree, axis_name) if axis_name else tree


def make_loss_and_grads(model, label_smoothing=0.0):
  """(state, batch) -> ((loss, (logits, new_batch_stats)), grads) on this device's shard."""
  def loss_fn(params, state, batch):
    logits, updates = model.apply({'params': params, 'batch_stats': state.batch_stats},
                                  batch['image'], train=True, mutable=['batch_stats'])
    loss = losses.cross_entropy(logits, batch['label'], label_smoothing)
    return loss, (logits, updates['batch_stats'])

  def loss_and_grads(state, batch):
    return jax.value_and_grad(loss_fn, has_aux=True)(state.params, state, batch)
  return loss_and_grads


def make_train_step(loss_and_grads, axis_name=None):
  """A cross-entropy (or any `loss_and_grads`) SGD step: (state, batch) -> (state, metrics)."""
  def train_step(state, batch):
    (loss, (logits, batch_stats)), grads = loss_and_grads(state, batch)
    grads, batch_stats = _mean_over_devices((grads, batch_stats), axis_name)
    metrics = _mean_over_devices(
        {'loss': loss, 'accuracy': jnp.mean(jnp.argmax(logits, -1) == batch['label'])}, axis_name)
    return state.apply_gradients(grads=grads, batch_stats=batch_stats), metrics
  return train_step


def make_eval_step(model, axis_name=None):
  """(variables, batch) -> summed loss, correct and count over the real (masked) examples."""
  def eval_step(variables, batch):
    logits = model.apply(variables, batch['image'], train=False)
    mask = batch['mask'].astype(jnp.float32)
    nll = -jnp.take_along_axis(jax.nn.log_softmax(logits), batch['label'][:, None], -1)[:, 0]
    sums = {'loss': jnp.sum(nll * mask),
            'correct': jnp.sum((jnp.argmax(logits, -1) == batch['label']) * mask),
            'count': jnp.sum(mask)}
    return jax.lax.psum(sums, axis_name) if axis_name else sums
  return eval_step
