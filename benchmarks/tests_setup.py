"""What the benchmarks that measure the tests' own runs share: the tests' XLA setup in this
process, and the JSON record they write (with the CPU, since XLA's rounding and speed follow it)."""

import json
import os
import pathlib
import sys
import time

TESTS = pathlib.Path(__file__).resolve().parents[1] / 'tests'
sys.path.insert(0, str(TESTS))
import child_env  # noqa: E402  (tests/ is not a package)


def use_the_tests_xla(compilation_cache=False):
  """The tests' XLA flags and 8 host devices (and, if asked, their compilation cache): call it
  before JAX starts."""
  os.environ['XLA_FLAGS'] = f'{child_env.FAST_COMPILE} {child_env.HOST_DEVICES}'
  os.environ.setdefault('JAX_PLATFORMS', 'cpu')
  if compilation_cache:
    import jax

    jax.config.update('jax_compilation_cache_dir', str(child_env.XLA_CACHE))
    jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)


def write_record(out, rows):
  """Writes {command, xla_flags, platform, cpu, date, rows} as JSON to `out`; says where."""
  from ckd_jax.workdir.record import software_versions

  versions = software_versions()
  out = pathlib.Path(out)
  out.parent.mkdir(parents=True, exist_ok=True)
  record = dict(
    command=' '.join(sys.argv),
    xla_flags=os.environ.get('XLA_FLAGS', ''),
    platform=versions['platform'],
    cpu=versions['cpu'],
    date=time.strftime('%Y-%m-%d'),
    rows=rows,
  )
  out.write_text(json.dumps(record, indent=1))
  print(f'wrote {out}')
