"""Training recipes and config presets shared by the files in configs/.

Configs stay the single source of truth: every field and its default is in configs/default.py
(the paper's recipe included); these functions start from it and fill in the other papers'
numbers (RepDistiller, early-stopped teachers) and the CPU studies' sizes, so that the files in
configs/ do not repeat them.
"""

import functools
import importlib.util
import pathlib

import ml_collections

RECIPES = ('paper', 'repdistiller')
# The paper's teacher-student pairs (Wang et al. 2022, Table 3).
PAPER_PAIRS = (
  'wrn_40_2-wrn_40_1',
  'wrn_40_2-mobilenetv2_075',
  'resnet110-resnet32',
  'resnet110-mobilenetv2_075',
)


def optimizer(learning_rate, milestones, weight_decay=5e-4, nesterov=True, schedule='step'):
  return ml_collections.ConfigDict(
    dict(
      learning_rate=learning_rate,
      momentum=0.9,
      nesterov=nesterov,
      weight_decay=weight_decay,
      schedule=schedule,
      milestones=tuple(milestones),
      gamma=0.1,
    )
  )


@functools.lru_cache(maxsize=1)
def _default_module():
  """configs/default.py: inside the package when installed (setup.py installs configs/ as
  ckd_jax.configs), beside it in a checkout (an editable install, or PYTHONPATH)."""
  here = pathlib.Path(__file__).resolve().parent
  for path in (here / 'configs' / 'default.py', here.parent / 'configs' / 'default.py'):
    if path.exists():
      spec = importlib.util.spec_from_file_location('ckd_jax_default_config', path)
      module = importlib.util.module_from_spec(spec)
      spec.loader.exec_module(module)
      return module
  raise FileNotFoundError(
    f'configs/default.py is neither in {here} nor beside it: reinstall ckd_jax'
  )


def default_config():
  """A fresh copy of configs/default.py's config: every field with its default."""
  return _default_module().get_config()


def paper_teacher(arch):
  """Wang et al.: configs/default.py's teacher (200 epochs, batch 128, SGD 0.1 Nesterov, wd 5e-4,
  ×0.1 at 60/120/180, snapshots every 20 epochs) with `arch`."""
  config = default_config().teacher
  del config.vectorize  # (base_config adds it)
  config.arch = arch
  return config


def repdistiller_teacher(arch):
  """Tian et al. (RepDistiller): 240 epochs, batch 64, lr 0.05 (×0.1 at 150/180/210), no
  Nesterov."""
  config = paper_teacher(arch)
  config.epochs, config.batch_size = 240, 64
  config.snapshot_epochs = tuple(range(20, 241, 20))
  config.optimizer = optimizer(0.05, (150, 180, 210), nesterov=False)
  return config


def early_stopped_teacher(arch):
  """ESKD variant (a), Cho & Hariharan: a short schedule (lr ×0.1 at 15, stop at 50)."""
  config = paper_teacher(arch)
  config.epochs = 50
  config.snapshot_epochs = (10, 20, 30, 40, 50)
  config.optimizer = optimizer(0.1, (15,))
  return config


TEACHER_SCHEDULES = ('full', 'early_stop')


def teacher_recipe(recipe, arch, schedule='full'):
  if recipe not in RECIPES:
    raise ValueError(f'Unknown recipe {recipe!r}; choose one of {RECIPES}')
  if schedule not in TEACHER_SCHEDULES:
    raise ValueError(f'Unknown teacher schedule {schedule!r}; choose one of {TEACHER_SCHEDULES}')
  if schedule == 'early_stop':
    return early_stopped_teacher(arch)
  return paper_teacher(arch) if recipe == 'paper' else repdistiller_teacher(arch)


def student_recipe(recipe, student, teachers):
  """Students train with the teacher's recipe; KD α = 0.5, τ = 5 (paper) or α = 0.1, τ = 4
  (RepDistiller: 0.1·CE + 0.9·KD, lr 0.01 for MobileNetV2/ShuffleNetV2)."""
  config = teacher_recipe(recipe, student)
  del config.arch, config.snapshot_epochs
  light = student.startswith(('mobilenetv2', 'shufflenetv2'))
  if recipe == 'repdistiller' and light:
    config.optimizer.learning_rate = 0.01
  paper = default_config().distill
  config.update(
    dict(
      student=student,
      teachers=tuple(teachers),
      num_seeds=paper.num_seeds,
      alpha=paper.alpha if recipe == 'paper' else 0.1,
      temperature=paper.temperature if recipe == 'paper' else 4.0,
      ensemble_mode=paper.ensemble_mode,
      kd_until_epoch=paper.kd_until_epoch,
      teacher_train_mode_batch_norm=paper.teacher_train_mode_batch_norm,
    )
  )
  return config


def paper_teacher_choices(teacher_config, ensemble_size):
  """T0.3, T0.5, T0.7 (the kept snapshot nearest to that fraction of training), T_full, the snapshot
  ensemble {T0.5, T0.7, T_full}, the full ensemble of `ensemble_size` seeds, and no teacher."""
  fractions = []
  for fraction in (0.3, 0.5, 0.7):
    nearest = min(
      teacher_config.snapshot_epochs, key=lambda e: abs(e - fraction * teacher_config.epochs)
    )
    if nearest != teacher_config.epochs and nearest not in fractions:
      fractions.append(nearest)
  choices = [f'epoch:{e}' for e in fractions] + ['final', 'selected']
  snapshots = fractions[1:] + [teacher_config.epochs]
  if len(snapshots) > 1:
    choices.append('snapshot_ensemble:' + ','.join(str(e) for e in snapshots))
  if ensemble_size > 1:
    choices.append(f'full_ensemble:{ensemble_size}')
  return tuple(choices + ['none'])


def parse_config_arg(arg, defaults):
  """Parses the `:key=value,key=value` suffix of --config into `defaults` (a dict of str)."""
  values = dict(defaults)
  for item in filter(None, (arg or '').split(',')):
    key, sep, value = item.partition('=')
    if not sep or key not in values:
      raise ValueError(
        f'Bad config argument {item!r}; expected key=value with key in {sorted(values)}'
      )
    values[key] = value
  return values


def int_config_args(args, keys):
  """`args` (from `parse_config_arg`) with the values of `keys` as integers, or one clear error."""
  values = dict(args)
  for key in keys:
    try:
      values[key] = int(args[key])
    except ValueError:
      raise ValueError(f'config argument {key}={args[key]!r} must be an integer') from None
  return values


def select_config(**overrides):
  """MI estimation over snapshots and the choice of T* (Algorithm 1, steps 2-3):
  configs/default.py's select section with `overrides`."""
  config = default_config().select
  config.update(overrides)
  return config


def base_config(data, teacher, distill, select=None, stages='teacher,select,distill,report'):
  """configs/default.py's config with `data` merged in, `teacher` and `distill` as given (each
  with `vectorize` False) and `select` merged into the default selection; dicts or ConfigDicts."""
  config = default_config()
  config.stages = stages
  config.data.update(data)
  config.teacher = ml_collections.ConfigDict({'vectorize': False, **teacher})
  config.distill = ml_collections.ConfigDict({'vectorize': False, **distill})
  config.select = select_config(**(select or {}))
  return config


# The arguments after ':' in --config of the CPU studies (configs/fashion_mnist.py,
# cifar10_jpeg.py).
CPU_STUDY_ARGS = {
  'teacher': 'resnet20',
  'student': 'resnet8_b',
  'train_examples': '1000',
  'epochs': '30',
  'batch_size': '64',
  'regime': 'study',
}
CPU_STUDY_REGIMES = ('study', 'fit')


def cpu_study_config(data, args, test_examples=2000):
  """A whole study (EXPERIMENTS.md) sized for a 2-core CPU: the paper's schedule shrunk to `epochs`
  (lr ×0.1 at 0.3/0.6/0.9 of training, 10 snapshots), 3 teacher seeds, 3 student seeds per choice,
  T* by `variational` with `kde` alongside, on `train_examples` images seen many times over.
  `args`: CPU_STUDY_ARGS's keys, as `parse_config_arg` returns them (strings).

  Few images for many epochs, so that each run lasts minutes and the learning-rate steps matter
  (on 2 cores the teachers still end short of fitting their training images: EXPERIMENTS.md).
  args['regime'] = 'fit' is the regime the paper argues about: no augmentation, so the teacher
  fits its training images, one teacher seed, and students from every snapshot (regret of each
  selection measurable, not guessed);
  2,000 test images keep the evaluation noise (a binomial std of ~0.9 points at 80 % accuracy)
  below the differences being measured.
  """
  args = int_config_args(args, ('train_examples', 'epochs', 'batch_size'))
  epochs, batch_size, train_examples = args['epochs'], args['batch_size'], args['train_examples']
  if args['regime'] not in CPU_STUDY_REGIMES:
    raise ValueError(f'Unknown regime {args["regime"]!r}; choose one of {CPU_STUDY_REGIMES}')
  if epochs < 10:
    raise ValueError(f'a study needs at least 10 epochs (one snapshot per tenth), not {epochs}')
  milestones = tuple(round(f * epochs) for f in (0.3, 0.6, 0.9))
  learning_rate = 0.1 * batch_size / 128
  teacher = paper_teacher(args['teacher'])
  teacher.update(
    dict(
      num_seeds=3,
      epochs=epochs,
      batch_size=batch_size,
      snapshot_epochs=tuple(round(epochs * k / 10) for k in range(1, 11)),
      optimizer=optimizer(learning_rate, milestones),
    )
  )
  distill = student_recipe(
    'paper', args['student'], paper_teacher_choices(teacher, teacher.num_seeds)
  )
  distill.update(
    dict(
      num_seeds=3,
      epochs=epochs,
      batch_size=batch_size,
      optimizer=optimizer(learning_rate, milestones),
    )
  )  # its own ConfigDict
  data = dict(data, train_examples=train_examples, test_examples=test_examples)
  if args['regime'] == 'fit':  # the regime the paper argues about: a teacher that fits its data
    data.update(crop_padding=0, flip=False)
    teacher.num_seeds = 1
    distill.teachers = tuple(f'epoch:{e}' for e in teacher.snapshot_epochs[:-1]) + (
      'final',
      'selected',
      'none',
    )
  # The studies' selection as they ran it (EXPERIMENTS.md): variational first, on the pooled
  # feature, min-max normalised (the library's default, kde on the logits with 'max', was chosen
  # by their regret table).
  select = dict(
    method='variational,kde',
    feature='penultimate',
    normalization='minmax',
    num_samples=0,
    fit_samples=train_examples or 10000,
    repeats=5,
    variational=dict(
      seed=0,
      probe=dict(steps=500, batch_size=256, learning_rate=1e-2),
      decoder=dict(hidden=256, steps=500, batch_size=256, learning_rate=1e-3, pixel_noise_std=0.1),
    ),
  )
  return base_config(data, teacher, distill, select)


def paper_study_config(arg, dataset, source='cifar'):
  """The paper's CIFAR study (configs/cifar100.py, configs/cifar10.py); `arg` is the text after
  ':' in --config: pair=, teacher=, student=, recipe=, teacher_schedule=, source=.

  source 'cifar' (default) reads the official archives from ./data, where the official PyTorch
  code keeps them, and downloads them when missing, as that code does; 'tfds' and
  'image_folder' read the same dataset through TFDS or a folder (set data.root)."""
  args = parse_config_arg(
    arg,
    {
      'pair': '',
      'teacher': 'wrn_40_2',
      'student': 'wrn_40_1',
      'recipe': 'paper',
      'teacher_schedule': 'full',
      'source': source,
    },
  )
  if args['pair']:
    if args['pair'] not in PAPER_PAIRS:
      raise ValueError(f"Unknown pair {args['pair']!r}; the paper's pairs are {PAPER_PAIRS}")
    args['teacher'], args['student'] = args['pair'].split('-')
  teacher = teacher_recipe(args['recipe'], args['teacher'], args['teacher_schedule'])
  teacher.num_seeds = 3  # the full ensemble
  distill = student_recipe(
    args['recipe'], args['student'], paper_teacher_choices(teacher, teacher.num_seeds)
  )
  data = dict(source=args['source'], name=dataset)
  if args['source'] == 'cifar':
    data.update(root='./data', download=True, label='fine')  # label: 'coarse' = CIFAR-100's 20
  return base_config(data, teacher, distill)
