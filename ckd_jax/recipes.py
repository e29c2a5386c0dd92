"""Training recipes and config presets shared by the files in configs/.

Configs stay the single source of truth: these functions only fill ConfigDicts with the numbers
from the papers (DESIGN.md §3), so that configs/cifar100.py and configs/cifar10.py do not repeat them.
"""
import ml_collections

RECIPES = ('paper', 'repdistiller')


def optimizer(learning_rate, milestones, weight_decay=5e-4, nesterov=True, schedule='step'):
  return ml_collections.ConfigDict(dict(
      learning_rate=learning_rate, momentum=0.9, nesterov=nesterov, weight_decay=weight_decay,
      schedule=schedule, milestones=tuple(milestones), gamma=0.1))


def paper_teacher(arch):
  """Wang et al.: 200 epochs, batch 128, SGD 0.1 Nesterov, wd 5e-4, ×0.1 at 60/120/180,
  snapshots every 20 epochs."""
  return ml_collections.ConfigDict(dict(
      arch=arch, num_seeds=1, epochs=200, batch_size=128, label_smoothing=0.0,
      snapshot_epochs=tuple(range(20, 201, 20)), checkpoint_every_steps=500,
      optimizer=optimizer(0.1, (60, 120, 180))))


def repdistiller_teacher(arch):
  """Tian et al. (RepDistiller): 240 epochs, batch 64, lr 0.05 (×0.1 at 150/180/210), no Nesterov."""
  config = paper_teacher(arch)
  config.epochs, config.batch_size = 240, 64
  config.snapshot_epochs = tuple(range(20, 241, 20))
  config.optimizer = optimizer(0.05, (150, 180, 210), nesterov=False)
  return config


def teacher_recipe(recipe, arch):
  if recipe not in RECIPES:
    raise ValueError(f'Unknown recipe {recipe!r}; choose one of {RECIPES}')
  return paper_teacher(arch) if recipe == 'paper' else repdistiller_teacher(arch)


def parse_config_arg(arg, defaults):
  """Parses the `:key=value,key=value` suffix of --config into `defaults` (a dict of str)."""
  values = dict(defaults)
  for item in filter(None, (arg or '').split(',')):
    key, sep, value = item.partition('=')
    if not sep or key not in values:
      raise ValueError(f'Bad config argument {item!r}; expected key=value with key in '
                       f'{sorted(values)}')
    values[key] = value
  return values


def base_config(data, teacher, stages='teacher'):
  """Fields every config has; `data` and `teacher` are ConfigDicts or dicts."""
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.stages = stages
  config.parallel = 'none'  # or 'pmap': data parallel over all local devices
  config.sync_batch_norm = True  # under pmap, BN statistics over the global batch
  config.progress = True
  config.tensorboard = False  # True: also TensorBoard scalars (needs the `tensorboard` extra)
  config.data = ml_collections.ConfigDict(dict(
      source='tfds', name='', data_dir='', download=False, root='', cache_dir='', image_size=0,
      train_examples=0, test_examples=0, crop_padding=4, flip=True, eval_batch_size=500))
  config.data.update(data)
  config.teacher = ml_collections.ConfigDict(teacher)
  return config
