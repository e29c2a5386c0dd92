"""Checks of a config before any compute, and of a workdir against the config that made it."""
import json
import pathlib

from ckd_jax import losses, mi, teacher_choices
from ckd_jax.data.sources import SOURCES
from ckd_jax.models import get_model
from ckd_jax.training.optim import validate_optimizer_config

STAGES = ('teacher', 'select', 'distill', 'report')  # in the order they run
# Fields that may change between invocations on one workdir without changing any result.
VOLATILE_FIELDS = ('stages', 'progress', 'tensorboard')


def parse_stages(stages):
  names = [s.strip() for s in stages.split(',') if s.strip()] if isinstance(stages, str) else list(
      stages)
  for name in names:
    if name not in STAGES:
      raise ValueError(f'unknown stage {name!r}; available: {STAGES}')
  if not names:
    raise ValueError('config.stages is empty')
  return sorted(set(names), key=STAGES.index)


def validate(config):
  """Raises ValueError with a clear message for a config whose requested stages cannot run."""
  stages = parse_stages(config.stages)
  if config.data.source not in SOURCES:
    raise ValueError(f'Unknown data source {config.data.source!r}; choose one of {SOURCES}')
  if config.data.crop_padding < 0:
    raise ValueError('config.data.crop_padding must be >= 0')
  tc = config.teacher
  get_model(tc.arch, 10)  # raises for an unknown name
  _check_recipe(tc, 'teacher')
  epochs = list(tc.snapshot_epochs)
  if epochs != sorted(set(epochs)) or any(not 1 <= e <= tc.epochs for e in epochs):
    raise ValueError(f'teacher.snapshot_epochs {tuple(epochs)} must be strictly increasing epochs '
                     f'in [1, {tc.epochs}]')
  if tc.epochs not in epochs:
    raise ValueError(f'teacher.snapshot_epochs must include the last epoch ({tc.epochs}): it is '
                     'the T_full teacher')
  validate_optimizer_config(tc.optimizer, tc.epochs)
  if 'select' in stages:
    _validate_select(config)
  if 'distill' in stages:
    _validate_distill(config)


def _check_recipe(section, name):
  if section.epochs < 1 or section.batch_size < 1 or section.num_seeds < 1:
    raise ValueError(f'{name} epochs, batch_size and num_seeds must be >= 1')
  validate_optimizer_config(section.optimizer, section.epochs)


def _validate_select(config):
  sc = config.select
  if sc.method not in mi.METHODS:
    raise ValueError(f'Unknown select.method {sc.method!r}; choose one of {mi.METHODS}')
  if sc.feature not in mi.FEATURES:
    raise ValueError(f'select.feature must be one of {mi.FEATURES}')
  if sc.normalization not in mi.NORMALIZATIONS:
    raise ValueError(f'select.normalization must be one of {mi.NORMALIZATIONS}')
  if len(sc.weights) != 2 or min(sc.weights) < 0 or max(sc.weights) == 0:
    raise ValueError('select.weights must be two non-negative numbers, not both 0')
  if sc.num_samples < 0 or sc.fit_samples < 1 or sc.batch_size < 1:
    raise ValueError('select.num_samples >= 0 (0: the whole test split), fit_samples and '
                     'batch_size >= 1')


def _validate_distill(config):
  dc = config.distill
  get_model(dc.student, 10)
  _check_recipe(dc, 'distill')
  losses.check_kd_hyperparameters(float(dc.alpha), float(dc.temperature))
  if dc.ensemble_mode not in losses.ENSEMBLE_MODES:
    raise ValueError(f'distill.ensemble_mode must be one of {losses.ENSEMBLE_MODES}')
  if not 0 <= dc.kd_until_epoch <= dc.epochs:
    raise ValueError(f'distill.kd_until_epoch must be in [0, {dc.epochs}] (0: KD throughout)')
  teacher_choices.parse_all(dc.teachers, config.teacher)


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
  return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b))
          if k not in VOLATILE_FIELDS and a.get(k) != b.get(k)}


def check_workdir(config, workdir, allow_change=False):
  """Refuses a workdir written by a different config (unless allowed); writes config.json."""
  path = pathlib.Path(workdir) / 'config.json'
  new = json.loads(config.to_json())
  if path.exists() and not allow_change:
    diff = config_differences(json.loads(path.read_text()), new)
    if diff:
      lines = '\n'.join(f'  {k}: {old!r} in the workdir, {now!r} now' for k, (old, now) in
                        diff.items())
      raise ValueError(f'{workdir} was written by a different config:\n{lines}\nUse another '
                       '--workdir, or pass --allow_config_change to continue with the new config.')
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_suffix('.tmp')
  tmp.write_text(json.dumps(new, indent=2, sort_keys=True))
  tmp.replace(path)
