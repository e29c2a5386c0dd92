"""The streamed training split (data.stream, image folders) and configs/imagenet.py, on a small
generated image folder: streamed batches and runs equal in-memory ones exactly (same files, same
permutations and keys; only where the pixels come from differs)."""

import importlib.util
import json
import pathlib

import jax
import numpy as np
import pytest

from ckd_jax import config_checks, pipeline
from ckd_jax.data import (
  FileSplit,
  StreamingTrainBatches,
  TrainBatches,
  load_dataset,
  load_image_folder,
)
from ckd_jax.workdir.layout import teacher_run_dir

ROOT = pathlib.Path(__file__).resolve().parents[1]
MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)


@pytest.fixture(scope='module')
def folder(tmp_path_factory):
  """3 classes; 20 training and 4 test PNGs each, of varied sizes (resized when read)."""
  from PIL import Image

  root = tmp_path_factory.mktemp('generated_folder')
  rng = np.random.default_rng(0)
  for split, count in (('train', 20), ('test', 4)):
    for c in range(3):
      (root / split / f'class{c}').mkdir(parents=True)
      for i in range(count):
        size = int(rng.integers(10, 20))
        pixels = rng.integers(0, 256, (size, size + 1, 3), dtype=np.uint8)
        pixels[..., c] //= 2  # something to learn
        Image.fromarray(pixels).save(root / split / f'class{c}' / f'{i}.png')
  return root


def test_streamed_split_is_the_in_memory_split_as_files(folder):
  memory = load_image_folder(folder, image_size=12)
  streamed = load_image_folder(folder, image_size=12, stream=True, stream_threads=2)
  assert isinstance(streamed.train, FileSplit) and len(streamed.train) == len(memory.train) == 60
  np.testing.assert_array_equal(streamed.train.in_memory().images, memory.train.images)
  np.testing.assert_array_equal(streamed.train.labels, memory.train.labels)
  np.testing.assert_array_equal(streamed.test.images, memory.test.images)
  assert streamed.image_shape == memory.image_shape == (12, 12, 3)
  assert streamed.mean == memory.mean  # fewer than STATS_SAMPLE images: the same statistics
  few = streamed.train.take(5)
  assert isinstance(few, FileSplit) and few.in_memory().images.shape == (5, 12, 12, 3)


@pytest.mark.parametrize('rows', [None, slice(4, 8)])
def test_streamed_batches_equal_in_memory_batches(folder, rows):
  """Across an epoch end, in blocks, and read out of order (a resumed run restarts the reader);
  `rows` is a process's share of every global batch."""
  split = load_image_folder(folder, image_size=12).train
  files = load_image_folder(folder, image_size=12, stream=True, stream_threads=3).train
  args = (16, MEAN, STD, 2, True, 7)
  memory = TrainBatches(split, *args, rows=rows)
  streamed = StreamingTrainBatches(files, *args, rows=rows)
  assert streamed.steps_per_epoch == memory.steps_per_epoch == 3
  for step in (0, 1, 2, 3, 4, 1, 2):
    chex_equal(streamed.batch(step), memory.batch(step))
  chex_equal(streamed.block(6, 3), memory.block(6, 3))
  with pytest.raises(ValueError, match='crosses the epoch end'):
    streamed.block(7, 3)


def test_restarting_the_reader_closes_the_previous_one(folder):
  """A resumed or out-of-order read starts a new grain reader; the old one's threads stop."""
  files = load_image_folder(folder, image_size=12, stream=True, stream_threads=2).train
  streamed = StreamingTrainBatches(files, 16, MEAN, STD, 2, True, 7)
  streamed.batch(0)
  first = streamed._reader
  streamed.batch(2)
  assert streamed._reader is not first
  with pytest.raises(ValueError, match='closed iterator'):
    next(first)


def test_a_process_rows_are_its_rows_of_the_global_batch(folder):
  """Rows 4..8 of every batch, augmented with the draws of the whole batch (crop and flip)."""
  split = load_image_folder(folder, image_size=12).train
  args = (16, MEAN, STD, 2, True, 7)
  whole, rows = TrainBatches(split, *args), TrainBatches(split, *args, rows=slice(4, 8))
  for step in (0, 4):
    chex_equal(rows.batch(step), jax.tree.map(lambda x: x[4:8], whole.batch(step)))


def chex_equal(a, b):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_bad_stream_settings_are_refused_before_any_work():
  config = _imagenet_config()
  config.data.source = 'tfds'
  with pytest.raises(ValueError, match="needs data.source='image_folder'"):
    config_checks.validate(config)
  config = _imagenet_config()
  config.data.image_size = 0
  with pytest.raises(ValueError, match='needs data.image_size'):
    config_checks.validate(config)


def _imagenet_config():
  spec = importlib.util.spec_from_file_location('imagenet_config', ROOT / 'configs/imagenet.py')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def test_imagenet_config_is_the_standard_recipe():
  config = _imagenet_config()
  assert (config.teacher.arch, config.distill.student) == ('imagenet_resnet34', 'imagenet_resnet18')
  for section in (config.teacher, config.distill):
    assert (section.epochs, section.batch_size) == (90, 256)
    opt = section.optimizer
    assert (
      opt.learning_rate,
      opt.momentum,
      opt.nesterov,
      opt.weight_decay,
      opt.milestones,
      opt.gamma,
    ) == (0.1, 0.9, False, 1e-4, (30, 60), 0.1)
  assert config.data.stream and config.data.name == 'imagenet2012'
  config_checks.validate(config)


def test_imagenet_config_runs_streamed_on_a_generated_folder_like_in_memory(folder, tmp_path):
  """A tiny network and images (a ResNet-34 at 224 pixels is no CPU test), the teacher stage (the
  students read their batches through the same `make_train_batches`)."""

  def run(stream, workdir):
    config = _imagenet_config()
    config.data.update(
      root=str(folder), image_size=12, stream=stream, stream_threads=2, eval_batch_size=12
    )
    config.teacher.update(
      arch='resnet8_b', epochs=1, batch_size=16, snapshot_epochs=(1,), checkpoint_every_steps=0
    )
    config.teacher.optimizer.milestones = ()
    config.stages, config.parallel, config.progress = 'teacher', 'none', False
    pipeline.run(config, str(workdir))
    record = json.loads((teacher_run_dir(workdir, 'resnet8_b', 0) / 'metrics.jsonl').read_text())
    return {k: v for k, v in record.items() if 'time' not in k and 'per_sec' not in k}

  assert run(True, tmp_path / 'streamed') == run(False, tmp_path / 'memory')


def test_streaming_is_chosen_by_config(folder):
  config = _imagenet_config()
  config.data.update(root=str(folder), image_size=12)
  assert isinstance(load_dataset(config.data).train, FileSplit)
  config.data.stream = False
  assert not isinstance(load_dataset(config.data).train, FileSplit)
