"""Checks of a config before any compute: every rule once, each with a message that says what to
fix."""

from ckd_jax import losses, mi
from ckd_jax.data.sources import check_available
from ckd_jax.data_parallel import DataParallel
from ckd_jax.models import get_model
from ckd_jax.stages import teacher_choices
from ckd_jax.training.optim import validate_optimizer_config
from ckd_jax.training.precision import check_dtype
from ckd_jax.workdir.layout import STAGES, selection_path


def parse_stages(stages):
  names = (
    [s.strip() for s in stages.split(',') if s.strip()] if isinstance(stages, str) else list(stages)
  )
  for name in names:
    if name not in STAGES:
      raise ValueError(f'unknown stage {name!r}; available: {STAGES}')
  if not names:
    raise ValueError('config.stages is empty')
  return sorted(set(names), key=STAGES.index)


def validate(config):
  """Raises ValueError with a clear message for a config whose requested stages cannot run
  (the config alone; `check_inputs` looks at the disk)."""
  stages = parse_stages(config.stages)
  if config.data.crop_padding < 0:
    raise ValueError('config.data.crop_padding must be >= 0')
  _validate_stream(config.data)
  teacher_config = config.teacher
  get_model(teacher_config.arch, 10)  # raises for an unknown name
  _check_recipe(teacher_config, 'teacher')
  epochs = list(teacher_config.snapshot_epochs)
  if epochs != sorted(set(epochs)) or any(not 1 <= e <= teacher_config.epochs for e in epochs):
    raise ValueError(
      f'teacher.snapshot_epochs {tuple(epochs)} must be strictly increasing epochs '
      f'in [1, {teacher_config.epochs}]'
    )
  if teacher_config.epochs not in epochs:
    raise ValueError(
      f'teacher.snapshot_epochs must include the last epoch ({teacher_config.epochs}): '
      'it is the T_full teacher'
    )
  if 'select' in stages:
    _validate_select(config)
  if 'distill' in stages:
    _validate_distill(config)
  check_dtype(config.dtype)
  if config.vectorize_max_runs < 0:
    raise ValueError(
      f'vectorize_max_runs must be >= 0 (0: no limit), got {config.vectorize_max_runs}'
    )
  if config.steps_per_call < 1:
    raise ValueError(f'steps_per_call must be >= 1, got {config.steps_per_call}')
  _validate_batch_split(config, stages)


def check_inputs(config, workdir):
  """The checks that read the disk: the data is there, and what a stage needs from a stage that
  this invocation does not run exists. Called before anything is written to the workdir."""
  stages = parse_stages(config.stages)
  if set(stages) & {'teacher', 'select', 'distill'}:
    check_available(config.data)
  if (
    'distill' in stages
    and 'select' not in stages
    and 'selected' in config.distill.teachers
    and not selection_path(workdir).exists()
  ):
    raise ValueError(
      f"teacher choice 'selected' needs {selection_path(workdir)}: run the select "
      'stage first (add it to --config.stages)'
    )


def _validate_stream(data):
  if not data.get('stream', False):
    return
  if data.source != 'image_folder':
    raise ValueError(
      f"data.stream=True reads image files: it needs data.source='image_folder', "
      f'not {data.source!r} (streaming TFDS is not built yet)'
    )
  if data.image_size < 1 or data.stream_threads < 1:
    raise ValueError(
      'data.stream=True needs data.image_size (every image is resized to it as it '
      'is read) and data.stream_threads >= 1'
    )


def _check_recipe(section, name):
  if section.epochs < 1 or section.batch_size < 1 or section.num_seeds < 1:
    raise ValueError(f'{name} epochs, batch_size and num_seeds must be >= 1')
  if section.checkpoint_every_steps < 0:
    raise ValueError(
      f'{name}.checkpoint_every_steps must be >= 0 (0: at every epoch end), got '
      f'{section.checkpoint_every_steps}'
    )
  validate_optimizer_config(section.optimizer, section.epochs)


def _validate_batch_split(config, stages):
  """Under pmap and mesh every training batch is split evenly over the local devices (evaluation
  batches are padded to fit)."""
  parallel = DataParallel(config.parallel)
  if parallel.mode == 'mesh' and not config.sync_batch_norm:
    raise ValueError(
      'sync_batch_norm=False (BatchNorm statistics per device) needs '
      "parallel='pmap': under 'mesh' (the default with several devices) the "
      'statistics are always over the global batch'
    )
  for stage in ('teacher', 'distill'):
    if stage in stages:
      parallel.check_batch_size(config[stage].batch_size, f'{stage}.batch_size')


def _validate_select(config):
  select_config = config.select
  mi.parse_methods(select_config.method)
  if select_config.feature not in mi.FEATURES:
    raise ValueError(f'select.feature must be one of {mi.FEATURES}')
  if select_config.normalization not in mi.NORMALIZATIONS:
    raise ValueError(f'select.normalization must be one of {mi.NORMALIZATIONS}')
  if (
    len(select_config.weights) != 2
    or min(select_config.weights) < 0
    or max(select_config.weights) == 0
  ):
    raise ValueError('select.weights must be two non-negative numbers, not both 0')
  if select_config.repeats < 1 or not 0 < select_config.subsample <= 1:
    raise ValueError(
      'select.repeats must be >= 1 (1: one estimate on all samples) and select.subsample in (0, 1]'
    )
  if select_config.num_samples < 0 or select_config.fit_samples < 1 or select_config.batch_size < 1:
    raise ValueError(
      'select.num_samples >= 0 (0: every image of the split left after the fit), '
      'fit_samples and batch_size >= 1'
    )
  if select_config.split not in mi.SPLITS:
    raise ValueError(
      f'select.split must be one of {mi.SPLITS} (train: held-out training images, '
      'no test image read; test: the test split, labels included)'
    )


def _validate_distill(config):
  distill_config = config.distill
  get_model(distill_config.student, 10)
  _check_recipe(distill_config, 'distill')
  losses.check_kd_hyperparameters(float(distill_config.alpha), float(distill_config.temperature))
  losses.check_ensemble_mode(distill_config.ensemble_mode, 'distill.ensemble_mode')
  if not 0 <= distill_config.kd_until_epoch <= distill_config.epochs:
    raise ValueError(
      f'distill.kd_until_epoch must be in [0, {distill_config.epochs}] (0: KD throughout)'
    )
  teacher_choices.parse_all(distill_config.teachers, config.teacher)
