"""TrainState with BatchNorm statistics, and its initialisation from a model."""

import functools
from typing import Any

import jax
import jax.numpy as jnp
from flax.training import train_state


class TrainState(train_state.TrainState):
  batch_stats: Any = None

  @property
  def variables(self):
    """What `model.apply` needs for evaluation."""
    return {'params': self.params, 'batch_stats': self.batch_stats}


def init_variables(model, image_shape, seed):
  """The model's variables (params, batch_stats) on a zero batch, by one compiled program per
  model and shape (run eagerly, `model.init` compiles a program per parameter shape);
  deterministic in `seed`."""
  images = jnp.zeros((1,) + tuple(image_shape), jnp.float32)
  return _compiled_init(model, images.shape)(jax.random.key(seed), images)


def create_train_state(model, tx, image_shape, seed):
  """Initialises parameters on a zero batch; deterministic in `seed`."""
  variables = init_variables(model, image_shape, seed)
  # As TrainState.create, with the optimizer state made by one compiled call: eagerly, every
  # parameter shape would compile its own zeros (one program per distinct shape). An array
  # step (not a Python int) keeps its dtype through checkpoints and pmap.
  return TrainState(
    step=jnp.zeros((), jnp.int32),
    apply_fn=model.apply,
    params=variables['params'],
    tx=tx,
    opt_state=jax.jit(tx.init)(variables['params']),
    batch_stats=variables.get('batch_stats', {}),
  )


@functools.lru_cache(maxsize=16)
def _compiled_init(model, images_shape):
  """`model.init` compiled once per (model, input shape) in a process (flax modules compare by
  value): runs of one architecture (seeds, students of each teacher choice) share it.

  Compiled without XLA's backend optimisations: it runs once per run, and optimising its unrolled
  random number code was most of its compile time on the CPU (the values differ from optimised
  code's in the last bit at most).
  """
  init = jax.jit(model.init, static_argnames=('train',))
  return init.lower(jax.random.key(0), jnp.zeros(images_shape, jnp.float32), train=False).compile(
    {'xla_backend_optimization_level': 0}
  )


def count_params(model, image_shape):
  """Trainable parameter count, without compiling anything."""
  shapes = jax.eval_shape(
    lambda: model.init(jax.random.key(0), jnp.zeros((1,) + tuple(image_shape)))
  )
  return sum(x.size for x in jax.tree.leaves(shapes['params']))
