"""What a workdir records about how it was made: the config (a different one is refused) and the
manifest (when each stage last finished, how long it took, and the software that ran it)."""

import json
import pathlib
import platform
import sys
import time
from importlib import metadata

import ckd_jax
from ckd_jax.workdir import layout
from ckd_jax.workdir.files import read_json, write_json

# Fields that may change between invocations on one workdir without changing any result.
VOLATILE_FIELDS = ('stages', 'progress', 'tensorboard')
MANIFEST_PACKAGES = ('jax', 'jaxlib', 'flax', 'optax', 'orbax-checkpoint', 'numpy')


def _flatten(d, prefix=''):
  out = {}
  for key, value in d.items():
    if isinstance(value, dict):
      out.update(_flatten(value, f'{prefix}{key}.'))
    else:
      out[f'{prefix}{key}'] = list(value) if isinstance(value, tuple) else value
  return out


def config_differences(old, new):
  """Fields (dotted names) whose values differ, volatile fields excluded."""
  a, b = _flatten(old), _flatten(new)
  return {
    k: (a.get(k), b.get(k))
    for k in sorted(set(a) | set(b))
    if k not in VOLATILE_FIELDS and a.get(k) != b.get(k)
  }


def check_workdir(config, workdir, allow_change=False):
  """Refuses a workdir written by a different config (unless allowed); writes config.json."""
  path = layout.config_path(workdir)
  new = json.loads(config.to_json())
  if path.exists() and not allow_change:
    diff = config_differences(read_json(path), new)
    if diff:
      lines = '\n'.join(
        f'  {k}: {old!r} in the workdir, {now!r} now' for k, (old, now) in diff.items()
      )
      raise ValueError(
        f'{workdir} was written by a different config:\n{lines}\nUse another '
        '--workdir, or pass --allow_config_change to continue with the new config.'
      )
  path.parent.mkdir(parents=True, exist_ok=True)
  write_json(path, new)


def read_config(workdir):
  """The config that made the workdir, as a plain dict."""
  return read_json(layout.config_path(workdir))


def cpu_description(cpuinfo='/proc/cpuinfo'):
  """The CPU's model and widest vector extension, as Linux names them: XLA compiles for the
  host's instruction set, so CPUs with other extensions may round differently (a run reproduces
  to the last bit only on the same kind of CPU)."""
  try:
    lines = pathlib.Path(cpuinfo).read_text().splitlines()
  except OSError:
    return platform.processor() or platform.machine()
  fields = {}
  for line in lines:  # the first processor's fields
    key, _, value = line.partition(':')
    fields.setdefault(key.strip(), value.strip())
  flags = set((fields.get('flags') or fields.get('Features', '')).split())  # x86, Arm
  widest = next((f for f in ('avx512f', 'avx2', 'avx', 'asimd') if f in flags), 'no avx')
  return (
    f'{fields.get("model name", platform.machine())} (family {fields.get("cpu family", "?")}, '
    f'model {fields.get("model", "?")}, {widest})'
  )


def software_versions():
  """Python's and the packages' versions, and the platform and CPU that ran them."""
  versions = {
    'python': sys.version.split()[0],
    'platform': platform.platform(),
    'cpu': cpu_description(),
    'ckd_jax': ckd_jax.__version__,
  }
  for package in MANIFEST_PACKAGES:
    try:
      versions[package] = metadata.version(package)
    except metadata.PackageNotFoundError:
      versions[package] = None
  return versions


def record_stage(workdir, stage, seconds, finished):
  """Adds a leg of `stage` that took `seconds` to manifest.json, and when it finished the stage
  (None when it was interrupted: the stage is unfinished until a later leg finishes it).

  Every leg counts, interrupted (Ctrl-C, an error) or not, so a stage resumed after a kill or rerun
  to add runs reports all of its wall time; only a leg killed outright (SIGKILL, power) is lost.
  """
  path = layout.manifest_path(workdir)
  manifest = read_json(path) if path.exists() else {'stages': {}}
  before = manifest['stages'].get(stage, {'duration_s': 0.0, 'legs': 0})
  manifest['stages'][stage] = {
    'duration_s': round(before['duration_s'] + seconds, 3),
    'legs': before.get('legs', 1) + 1,  # manifests before legs were counted: one leg
    'finished_at': time.strftime('%Y-%m-%dT%H:%M:%S%z') if finished else None,
  }
  manifest['software'] = software_versions()
  write_json(path, manifest)
