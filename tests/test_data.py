"""Data sources on offline data, and augmentation/batching against numpy."""

import gzip

import jax
import ml_collections
import numpy as np
import pytest
from PIL import Image

from ckd_jax import data
from ckd_jax.data.augment import crop_and_flip, normalize, sample_crop_flip


def _numpy_crop_flip(images, dy, dx, flips, padding):
  padded = np.pad(images, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
  h, w = images.shape[1:3]
  out = np.stack([padded[i, y : y + h, x : x + w] for i, (y, x) in enumerate(zip(dy, dx))])
  return np.where(np.asarray(flips)[:, None, None, None], out[:, :, ::-1], out)


def test_augmentation_is_a_crop_of_the_padded_image_and_a_flip():
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, size=(64, 32, 32, 3), dtype=np.uint8)
  dy, dx, flips = sample_crop_flip(jax.random.key(3), 64, 4)
  out = np.asarray(jax.jit(crop_and_flip, static_argnums=4)(images, dy, dx, flips, 4))
  np.testing.assert_array_equal(
    out, _numpy_crop_flip(images, np.asarray(dy), np.asarray(dx), flips, 4)
  )
  # The draws cover the whole range and both flip outcomes.
  assert set(np.asarray(dy)) == set(range(9)) and 0 < np.asarray(flips).mean() < 1


def test_augment_composes_sampling_and_cropping():
  images = np.random.default_rng(1).integers(0, 256, (8, 6, 6, 1), dtype=np.uint8)
  key = jax.random.key(7)
  dy, dx, flips = sample_crop_flip(key, 8, 2)
  np.testing.assert_array_equal(
    data.augment(key, images, 2), _numpy_crop_flip(images, dy, dx, flips, 2)
  )


def test_normalize_matches_numpy():
  images = np.random.default_rng(2).integers(0, 256, (4, 5, 5, 3), dtype=np.uint8)
  mean, std = (0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)
  expected = (images / 255.0 - np.array(mean)) / np.array(std)
  np.testing.assert_allclose(normalize(images, mean, std), expected, rtol=1e-5, atol=1e-5)


def _toy_split(n=50, seed=0):
  rng = np.random.default_rng(seed)
  return data.Split(
    rng.integers(0, 256, (n, 4, 4, 1), dtype=np.uint8), np.arange(n, dtype=np.int32)
  )


def test_train_batches_cover_each_epoch_once_and_are_a_function_of_the_step():
  split = _toy_split()
  batches = data.TrainBatches(split, 16, (0.0,), (1.0,), padding=0, flip=False, seed=0)
  assert batches.steps_per_epoch == 3  # 50 // 16, the remainder is dropped
  epoch0 = np.concatenate([np.asarray(batches.batch(s)['label']) for s in range(3)])
  assert len(set(epoch0)) == 48
  epoch1 = np.concatenate([np.asarray(batches.batch(s)['label']) for s in range(3, 6)])
  assert not np.array_equal(epoch0, epoch1)
  # A fresh object (a resumed run) asked for step 4 gives the same batch, images included.
  again = data.TrainBatches(split, 16, (0.0,), (1.0,), padding=0, flip=False, seed=0).batch(4)
  np.testing.assert_array_equal(again['label'], batches.batch(4)['label'])
  np.testing.assert_allclose(
    again['image'], split.images[np.asarray(again['label'])] / 255.0, rtol=1e-6
  )


def test_eval_batches_visit_everything_once_with_a_mask():
  split = _toy_split(23)
  seen = []
  for batch in data.eval_batches(split, 10, (0.0,), (1.0,)):
    assert batch['image'].shape == (10, 4, 4, 1)
    seen += list(np.asarray(batch['label'])[np.asarray(batch['mask'])])
  assert seen == list(range(23))


def test_digits_is_real_offline_data():
  ds = data.load_digits()
  assert (len(ds.train), len(ds.test)) == (1438, 359)
  assert ds.image_shape == (8, 8, 1) and ds.num_classes == 10
  assert ds.train.images.max() == 255 and set(ds.test.labels) == set(range(10))


def test_digits_read_from_sklearns_file_equal_sklearns_loader():
  from sklearn.datasets import load_digits

  pixels, labels = data.sources._sklearn_digits()
  bunch = load_digits()
  np.testing.assert_array_equal(pixels, bunch.data)
  np.testing.assert_array_equal(labels, bunch.target)


def _write_idx(path, array, compress):
  header = bytes([0, 0, 0x08, array.ndim]) + b''.join(d.to_bytes(4, 'big') for d in array.shape)
  payload = header + array.astype(np.uint8).tobytes()
  (gzip.open if compress else open)(path, 'wb').write(payload)


@pytest.mark.parametrize('compress', [True, False])
def test_fashion_mnist_reads_official_idx_files(tmp_path, compress):
  rng = np.random.default_rng(0)
  arrays = {
    'train-images-idx3-ubyte': rng.integers(0, 256, (12, 28, 28)),
    'train-labels-idx1-ubyte': np.arange(12) % 10,
    't10k-images-idx3-ubyte': rng.integers(0, 256, (5, 28, 28)),
    't10k-labels-idx1-ubyte': np.arange(5),
  }
  for stem, array in arrays.items():
    _write_idx(tmp_path / (stem + ('.gz' if compress else '')), array, compress)
  ds = data.load_fashion_mnist(tmp_path)
  np.testing.assert_array_equal(ds.train.images[..., 0], arrays['train-images-idx3-ubyte'])
  np.testing.assert_array_equal(ds.test.labels, arrays['t10k-labels-idx1-ubyte'])
  assert ds.num_classes == 10


def test_fashion_mnist_missing_files_say_how_to_get_them(tmp_path):
  with pytest.raises(data.DataUnavailableError, match='dataset-fashion-mnist'):
    data.load_fashion_mnist(tmp_path)


def _write_folder(root, sizes=None):
  rng = np.random.default_rng(0)
  expected = {}
  for split, n in (('train', 3), ('test', 2)):
    for cls in ('cat', 'dog'):
      (root / split / cls).mkdir(parents=True)
      for i in range(n):
        size = (sizes or {}).get((split, cls, i), 6)
        pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / split / cls / f'{i}.png')
        expected[(split, cls, i)] = pixels
  return expected


def test_image_folder_reads_the_tree_and_caches(tmp_path):
  expected = _write_folder(tmp_path / 'data')
  cache = tmp_path / 'cache'
  ds = data.load_image_folder(tmp_path / 'data', cache_dir=cache)
  assert ds.num_classes == 2 and len(ds.train) == 6 and len(ds.test) == 4
  # Both splits are shuffled once (a fixed permutation): every (image, label) pair is still a file
  # of that class, and a prefix (`test_examples`) is not just the first class.
  for split, n in (('train', 6), ('test', 4)):
    pairs = {
      (getattr(ds, split).images[i].tobytes(), int(getattr(ds, split).labels[i])) for i in range(n)
    }
    assert pairs == {
      (v.tobytes(), ['cat', 'dog'].index(k[1])) for k, v in expected.items() if k[0] == split
    }
  assert sorted(ds.test.labels) == [0, 0, 1, 1] and list(ds.test.labels) != [0, 0, 1, 1]
  assert len(list(cache.glob('*.npy'))) == 2
  again = data.load_image_folder(tmp_path / 'data', cache_dir=cache)
  np.testing.assert_array_equal(again.train.images, ds.train.images)


def test_image_folder_refuses_mixed_sizes_unless_resized(tmp_path):
  _write_folder(tmp_path, sizes={('train', 'dog', 1): 7})
  with pytest.raises(ValueError, match='image_size'):
    data.load_image_folder(tmp_path)
  assert data.load_image_folder(tmp_path, image_size=5).image_shape == (5, 5, 3)


def test_image_folder_missing_root_is_a_clear_error(tmp_path):
  with pytest.raises(data.DataUnavailableError, match='config.data.root'):
    data.load_image_folder(tmp_path / 'nowhere')


def _data_config(**kw):
  return ml_collections.ConfigDict(
    dict(
      dict(
        source='tfds',
        name='cifar100',
        data_dir='',
        download=False,
        train_examples=0,
        test_examples=0,
      ),
      **kw,
    )
  )


def test_tfds_source_end_to_end_with_mock_data():
  import tensorflow_datasets as tfds

  with tfds.testing.mock_data(num_examples=12):
    ds = data.load_dataset(_data_config(test_examples=5))
  assert ds.image_shape == (32, 32, 3) and ds.num_classes == 100
  assert len(ds.train) == 12 and len(ds.test) == 5
  assert ds.train.images.dtype == np.uint8 and ds.train.labels.max() < 100
  assert ds.mean == (0.5071, 0.4867, 0.4408)  # published CIFAR-100 constants


def test_tfds_without_data_fails_at_once_with_instructions(tmp_path):
  with pytest.raises(data.DataUnavailableError, match='download=True'):
    data.load_dataset(_data_config(data_dir=str(tmp_path)))


def test_unknown_tfds_name_and_source_are_refused():
  with pytest.raises(ValueError, match='no dataset named'):
    data.load_dataset(_data_config(name='not_a_dataset_xyz'))
  with pytest.raises(ValueError, match='Unknown data source'):
    data.load_dataset(_data_config(source='csv'))


def test_image_folder_refuses_a_corrupt_image_naming_it(tmp_path):
  _write_folder(tmp_path)
  (tmp_path / 'train' / 'dog' / '1.png').write_bytes(b'\x89PNG\r\n\x1a\n not really a png')
  with pytest.raises(ValueError, match=r'train/dog/1.png cannot be decoded'):
    data.load_image_folder(tmp_path)


def test_image_folder_refuses_an_empty_class_folder_before_reading_images(tmp_path):
  _write_folder(tmp_path)
  (tmp_path / 'train' / 'emu').mkdir()
  config = ml_collections.ConfigDict(dict(source='image_folder', root=str(tmp_path)))
  for load in (data.check_available, lambda c: data.load_image_folder(c.root)):
    with pytest.raises(ValueError, match='class folder .*train/emu holds no images'):
      load(config)


def test_check_available_says_what_is_missing_without_loading(tmp_path):
  config = ml_collections.ConfigDict(dict(source='fashion_mnist', root=str(tmp_path)))
  with pytest.raises(data.DataUnavailableError, match='dataset-fashion-mnist'):
    data.check_available(config)
  with pytest.raises(data.DataUnavailableError, match='not prepared'):
    data.check_available(_data_config(data_dir=str(tmp_path)))
  data.check_available(ml_collections.ConfigDict(dict(source='digits')))


def test_a_block_of_batches_equals_the_batches_of_its_steps():
  """Augmentation included: each step's key is the same under vmap as alone."""
  split = _toy_split()
  batches = data.TrainBatches(split, 8, (0.5,), (0.2,), padding=2, flip=True, seed=3)
  assert batches.steps_per_epoch == 6
  block = batches.block(8, 3)  # epoch 1, steps 2-4
  fresh = data.TrainBatches(split, 8, (0.5,), (0.2,), padding=2, flip=True, seed=3)
  for i, step in enumerate(range(8, 11)):
    one = fresh.batch(step)
    np.testing.assert_array_equal(block['label'][i], one['label'])
    np.testing.assert_array_equal(block['image'][i], one['image'])
  with pytest.raises(ValueError, match='crosses the epoch end'):
    batches.block(10, 3)
