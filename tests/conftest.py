"""Test-wide JAX settings, applied before jax is imported anywhere.

- 8 fake CPU devices for the pmap tests, and programs compiled without LLVM's optimisations
  (child_env.py says why, and which flags the processes that the tests start keep).
- A persistent compilation cache: the tests build many runs whose steps compile to the same XLA
  program (new Python closures, same HLO); the cache turns those recompilations into look-ups.
"""

import os

from child_env import FAST_COMPILE, HOST_DEVICES, XLA_CACHE

os.environ['XLA_FLAGS'] = ' '.join(
  [os.environ.get('XLA_FLAGS', ''), FAST_COMPILE, HOST_DEVICES]
).strip()
os.environ.setdefault('JAX_PLATFORMS', 'cpu')

import jax  # noqa: E402  (must come after the flags above)

jax.config.update('jax_compilation_cache_dir', str(XLA_CACHE))
jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
jax.config.update('jax_persistent_cache_min_entry_size_bytes', 0)


def pytest_configure(config):
  """The tests that corrupt a checkpoint on purpose leave TensorStore futures that complete on the
  asyncio loop Orbax already closed; each reaches sys.unraisablehook ('Event loop is closed')
  whenever it is collected, i.e. during whichever test runs then. `ckd_jax.main` drops exactly
  this noise for users; the tests drop it too, and keep every other unraisable exception."""
  config.addinivalue_line(
    'filterwarnings',
    r'ignore:(?s)Exception ignored in.*RuntimeError. Event loop is closed'
    ':pytest.PytestUnraisableExceptionWarning',
  )
