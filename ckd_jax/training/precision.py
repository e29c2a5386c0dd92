"""Mixed precision: compute in bfloat16, keep everything that accumulates in float32.

Parameters, optimizer state, BatchNorm statistics (computed in float32 by `models.layers.BatchNorm`)
and losses stay float32; only the forward and backward passes see bfloat16 copies of the parameters
and images. The cast's gradient is a cast back, so updates land on the float32 parameters.
"""

import jax
import jax.numpy as jnp

DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}


def check_dtype(name, what='dtype'):
  if name not in DTYPES:
    raise ValueError(f'{what} must be one of {tuple(DTYPES)}, got {name!r}')
  return DTYPES[name]


def cast_params(params, dtype):
  """Floating-point leaves in the compute dtype (a no-op for float32)."""
  return jax.tree.map(
    lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, params
  )


def compute_variables(variables, dtype):
  """{'params': in the compute dtype, 'batch_stats': float32 as they are} for a frozen model."""
  return {**variables, 'params': cast_params(variables['params'], dtype)}
