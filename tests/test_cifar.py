"""The `cifar` and `tiny_imagenet` sources on files the tests write in each official format, and the
download against a server of our own on 127.0.0.1."""

import hashlib
import http.server
import os
import pathlib
import pickle
import socket
import subprocess
import sys
import tarfile
import threading

import child_env
import numpy as np
import pytest

from ckd_jax.data import cifar, sources

ROOT = pathlib.Path(__file__).resolve().parents[1]
NAMES10 = [f'class{i}'.encode() for i in range(10)]


def _images(rng, n):
  return rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)


def _rows(images):
  """NHWC images as the official files store them: one channel-major row of 3072 bytes each."""
  return images.transpose(0, 3, 1, 2).reshape(len(images), -1)


def _pickle(path, obj):
  path.write_bytes(pickle.dumps(obj, protocol=2))


def write_cifar10_python(root, rng, per_batch=3, test=4):
  folder = root / 'cifar-10-batches-py'
  folder.mkdir(parents=True)
  train_images, train_labels = [], []
  for i in range(1, 6):
    images, labels = _images(rng, per_batch), rng.integers(0, 10, per_batch).tolist()
    _pickle(
      folder / f'data_batch_{i}',
      {b'data': _rows(images), b'labels': labels, b'batch_label': b'training batch'},
    )
    train_images.append(images)
    train_labels += labels
  test_images, test_labels = _images(rng, test), rng.integers(0, 10, test).tolist()
  _pickle(folder / 'test_batch', {b'data': _rows(test_images), b'labels': test_labels})
  _pickle(folder / 'batches.meta', {b'label_names': NAMES10, b'num_vis': 3072})
  return np.concatenate(train_images), np.array(train_labels), test_images, np.array(test_labels)


def write_cifar100_python(root, rng, train=6, test=4):
  folder = root / 'cifar-100-python'
  folder.mkdir(parents=True)
  out = {}
  for split, n in (('train', train), ('test', test)):
    images = _images(rng, n)
    fine, coarse = rng.integers(0, 100, n).tolist(), rng.integers(0, 20, n).tolist()
    _pickle(
      folder / split,
      {
        b'data': _rows(images),
        b'fine_labels': fine,
        b'coarse_labels': coarse,
        b'filenames': [b'x.png'] * n,
      },
    )
    out[split] = (images, np.array(fine), np.array(coarse))
  _pickle(
    folder / 'meta',
    {
      b'fine_label_names': [f'f{i}'.encode() for i in range(100)],
      b'coarse_label_names': [f'c{i}'.encode() for i in range(20)],
    },
  )
  return out


def write_binary(root, rng, name, counts=(3, 4)):
  """The binary version: cifar10 records are label + pixels, cifar100 coarse + fine + pixels."""
  fmt = cifar.FORMATS[name][1]
  folder = root / fmt.folder
  folder.mkdir(parents=True)
  out = {}
  for files, n in ((fmt.train, counts[0]), (fmt.test, counts[1])):
    images, labels = [], []
    for file in files:
      batch = _images(rng, n)
      label = rng.integers(0, 10 if name == 'cifar10' else 100, (n, 1)).astype(np.uint8)
      heads = label if name == 'cifar10' else np.concatenate([label % 20, label], axis=1)
      (folder / file).write_bytes(np.concatenate([heads, _rows(batch)], axis=1).tobytes())
      images.append(batch)
      labels.append(label[:, 0])
    out[files[0]] = (np.concatenate(images), np.concatenate(labels))
  if name == 'cifar10':
    (folder / 'batches.meta.txt').write_text('\n'.join(n.decode() for n in NAMES10) + '\n\n')
  else:
    (folder / 'fine_label_names.txt').write_text('\n'.join(f'f{i}' for i in range(100)))
    (folder / 'coarse_label_names.txt').write_text('\n'.join(f'c{i}' for i in range(20)))
  return out


def _tar(folder, archive):
  with tarfile.open(archive, 'w:gz') as tar:
    tar.add(folder, arcname=folder.name)
  return archive


def test_the_python_version_reads_back_in_order(tmp_path):
  rng = np.random.default_rng(0)
  train_x, train_y, test_x, test_y = write_cifar10_python(tmp_path, rng)
  train, test, names = cifar.read('cifar10', tmp_path)
  np.testing.assert_array_equal(train.images, train_x)
  np.testing.assert_array_equal(train.labels, train_y)
  np.testing.assert_array_equal(test.images, test_x)
  np.testing.assert_array_equal(test.labels, test_y)
  assert names == [n.decode() for n in NAMES10] and train.labels.dtype == np.int32


@pytest.mark.parametrize('label', ['fine', 'coarse'])
def test_cifar100_reads_fine_or_coarse_labels(tmp_path, label):
  written = write_cifar100_python(tmp_path, np.random.default_rng(1))
  train, test, names = cifar.read('cifar100', tmp_path, label=label)
  column = 1 if label == 'fine' else 2
  for split, got in (('train', train), ('test', test)):
    np.testing.assert_array_equal(got.images, written[split][0])
    np.testing.assert_array_equal(got.labels, written[split][column])
  assert len(names) == (100 if label == 'fine' else 20) and names[3] == f'{label[0]}3'


@pytest.mark.parametrize('name', ['cifar10', 'cifar100'])
def test_the_binary_version_reads_back_in_order(tmp_path, name):
  written = write_binary(tmp_path, np.random.default_rng(2), name)
  fmt = cifar.FORMATS[name][1]
  train, test, names = cifar.read(name, tmp_path)
  np.testing.assert_array_equal(train.images, written[fmt.train[0]][0])
  np.testing.assert_array_equal(train.labels, written[fmt.train[0]][1])
  np.testing.assert_array_equal(test.images, written[fmt.test[0]][0])
  np.testing.assert_array_equal(test.labels, written[fmt.test[0]][1])
  assert len(names) == (10 if name == 'cifar10' else 100)


def test_an_archive_is_unpacked_once_and_read(tmp_path):
  made = tmp_path / 'made'
  written = write_cifar100_python(made, np.random.default_rng(3))
  root = tmp_path / 'root'
  root.mkdir()
  _tar(made / 'cifar-100-python', root / 'cifar-100-python.tar.gz')
  train, _, _ = cifar.read('cifar100', root)
  np.testing.assert_array_equal(train.images, written['train'][0])
  assert sorted(p.name for p in root.iterdir()) == ['cifar-100-python', 'cifar-100-python.tar.gz']
  (root / 'cifar-100-python.tar.gz').unlink()  # the unpacked folder is enough from now on
  np.testing.assert_array_equal(cifar.read('cifar100', root)[0].labels, written['train'][1])


def test_the_dataset_source_shuffles_once_and_cuts(tmp_path):
  import ml_collections

  written = write_cifar100_python(tmp_path, np.random.default_rng(4))
  config = ml_collections.ConfigDict(
    dict(
      source='cifar',
      name='cifar100',
      root=str(tmp_path),
      label='fine',
      download=False,
      train_examples=4,
      test_examples=0,
    )
  )
  sources.check_available(config)
  dataset = sources.load_dataset(config)
  assert dataset.num_classes == 100 and len(dataset.train) == 4 and len(dataset.test) == 4
  order = np.random.default_rng(0).permutation(6)[:4]  # the fixed permutation of every source
  np.testing.assert_array_equal(dataset.train.images, written['train'][0][order])
  assert dataset.mean == pytest.approx(sources.NORMALIZATION['cifar100'][0])


# ------------------------------------------------------------------------------------ bad input
def test_a_truncated_archive_is_refused_and_leaves_nothing(tmp_path):
  made = tmp_path / 'made'
  write_cifar100_python(made, np.random.default_rng(5))
  root = tmp_path / 'root'
  root.mkdir()
  archive = _tar(made / 'cifar-100-python', root / 'cifar-100-python.tar.gz')
  archive.write_bytes(archive.read_bytes()[: len(archive.read_bytes()) // 2])
  with pytest.raises(cifar.CifarError, match='is damaged .*delete it and rerun'):
    cifar.read('cifar100', root)
  assert [p.name for p in root.iterdir()] == ['cifar-100-python.tar.gz']


def test_a_pickle_naming_anything_else_is_refused_not_run(tmp_path):
  write_cifar10_python(tmp_path, np.random.default_rng(6))

  class Payload:
    def __reduce__(self):
      return (os.system, ('touch ' + str(tmp_path / 'ran'),))

  (tmp_path / 'cifar-10-batches-py' / 'test_batch').write_bytes(
    pickle.dumps({b'data': Payload(), b'labels': []}, protocol=2)
  )
  with pytest.raises(cifar.CifarError, match=r'test_batch is not a CIFAR file \(it names .*system'):
    cifar.read('cifar10', tmp_path)
  assert not (tmp_path / 'ran').exists()


def test_a_folder_without_its_test_file_is_refused(tmp_path):
  write_cifar10_python(tmp_path, np.random.default_rng(7))
  (tmp_path / 'cifar-10-batches-py' / 'test_batch').unlink()
  with pytest.raises(cifar.CifarError, match=r'is incomplete \(no test_batch\)'):
    cifar.read('cifar10', tmp_path)


def test_labels_out_of_range_are_refused(tmp_path):
  write_binary(tmp_path, np.random.default_rng(8), 'cifar10')
  path = tmp_path / 'cifar-10-batches-bin' / 'test_batch.bin'
  raw = bytearray(path.read_bytes())
  raw[0] = 10
  path.write_bytes(bytes(raw))
  with pytest.raises(cifar.CifarError, match='label 10 is outside 0..9'):
    cifar.read('cifar10', tmp_path)
  path.write_bytes(bytes(raw[:-5]))
  with pytest.raises(cifar.CifarError, match='is truncated'):
    cifar.read('cifar10', tmp_path)


def test_missing_data_says_how_to_get_it(tmp_path):
  with pytest.raises(cifar.CifarError, match='download=True to fetch it'):
    cifar.read('cifar100', tmp_path)
  with pytest.raises(ValueError, match="'coarse' is not a label set of cifar10"):
    cifar.read('cifar10', tmp_path, label='coarse')


# ------------------------------------------------------------------------------------- download
class _Server:
  """Serves `files` (name -> bytes) on 127.0.0.1; `cut` sends only the first half of each body
  (with the full Content-Length), as a server dying half-way does."""

  def __init__(self, files, cut=False):
    outer = self

    class Handler(http.server.BaseHTTPRequestHandler):
      def do_GET(self):
        body = files.get(self.path.lstrip('/'))
        if body is None:
          self.send_error(404)
          return
        self.send_response(200)
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2] if outer.cut else body)

      def log_message(self, *args):
        pass

    self.cut = cut
    self.httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
    self.url = f'http://127.0.0.1:{self.httpd.server_address[1]}/'
    threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

  def close(self):
    self.httpd.shutdown()
    self.httpd.server_close()


@pytest.fixture
def served_cifar100(tmp_path):
  made = tmp_path / 'made'
  written = write_cifar100_python(made, np.random.default_rng(9))
  archive = _tar(made / 'cifar-100-python', tmp_path / 'cifar-100-python.tar.gz').read_bytes()
  server = _Server({'cifar-100-python.tar.gz': archive})
  yield server, hashlib.md5(archive).hexdigest(), written
  server.close()


def test_the_download_checks_its_md5_and_writes_atomically(
  tmp_path, served_cifar100, monkeypatch, capsys
):
  server, md5, written = served_cifar100
  root = tmp_path / 'data'
  monkeypatch.setenv(cifar.MIRROR_ENV, server.url)
  monkeypatch.setenv(cifar.MIRROR_MD5_ENV, '0' * 32)  # wrong: refused, nothing left
  with pytest.raises(
    cifar.CifarError, match='has MD5 .* not the published 0{32}; the partial file was removed'
  ):
    cifar.read('cifar100', root, download=True)
  assert list(root.iterdir()) == []
  server.cut = True  # dies half-way: refused, nothing left
  monkeypatch.setenv(cifar.MIRROR_MD5_ENV, md5)
  with pytest.raises(cifar.CifarError, match='cannot download .*connection closed after'):
    cifar.read('cifar100', root, download=True)
  assert list(root.iterdir()) == []
  server.cut = False  # the rerun succeeds
  train, test, _ = cifar.read('cifar100', root, download=True)
  np.testing.assert_array_equal(train.images, written['train'][0])
  np.testing.assert_array_equal(test.labels, written['test'][1])
  assert sorted(p.name for p in root.iterdir()) == ['cifar-100-python', 'cifar-100-python.tar.gz']
  assert 'downloading cifar-100-python.tar.gz' in capsys.readouterr().err  # the progress bar


def test_an_unreachable_server_is_one_line(tmp_path, monkeypatch):
  with socket.socket() as s:  # a port nobody listens on
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
  monkeypatch.setenv(cifar.MIRROR_ENV, f'http://127.0.0.1:{port}/')
  with pytest.raises(cifar.CifarError) as error:
    cifar.read('cifar10', tmp_path / 'data', download=True)
  assert 'cannot download' in str(error.value) and 'by hand' in str(error.value)
  assert '\n' not in str(error.value) and not list((tmp_path / 'data').iterdir())


def test_the_paper_config_downloads_and_trains_from_the_command_line(tmp_path, served_cifar100):
  """configs/cifar100.py as a new user runs it, with the archive served locally: the data is
  fetched before anything is written to the workdir, then the teacher trains. (XLA's own options
  and the workdir's compilation cache, as a user has them, are test_main.py's quick-start's.)"""
  server, md5, _ = served_cifar100
  env = child_env.without_host_devices()
  env.update({cifar.MIRROR_ENV: server.url, cifar.MIRROR_MD5_ENV: md5, 'PYTHONPATH': str(ROOT)})
  result = subprocess.run(
    [
      sys.executable,
      '-m',
      'ckd_jax.main',
      '--config=configs/cifar100.py',
      f'--workdir={tmp_path / "w"}',
      f'--config.data.root={tmp_path / "data"}',
      '--config.stages=teacher',
      '--config.progress=False',
      '--config.parallel=none',
      '--config.teacher.arch=resnet8_b',
      '--config.teacher.num_seeds=1',
      '--config.teacher.epochs=1',
      '--config.teacher.snapshot_epochs=(1,)',
      '--config.teacher.optimizer.milestones=()',
      '--config.teacher.batch_size=2',
      f'--compilation_cache_dir={child_env.XLA_CACHE}',
    ],
    cwd=ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'downloading cifar-100-python.tar.gz' in result.stderr
  assert (tmp_path / 'w' / 'teachers' / 'resnet8_b_seed0' / 'final.json').is_file()


# ------------------------------------------------------------------------------- tiny_imagenet
def write_tiny_imagenet(root, rng, wnids=('n02', 'n01', 'n03'), per_class=2, val=4):
  from PIL import Image

  base = root / 'tiny-imagenet-200'
  (base / 'val' / 'images').mkdir(parents=True)
  (base / 'wnids.txt').write_text('\n'.join(wnids) + '\n')
  train = {}
  for wnid in wnids:
    folder = base / 'train' / wnid / 'images'
    folder.mkdir(parents=True)
    for k in range(per_class):
      image = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
      Image.fromarray(image).save(folder / f'{wnid}_{k}.png')
      train[(wnid, k)] = image
  lines, val_images = [], []
  for k in range(val):
    image = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    Image.fromarray(image).save(base / 'val' / 'images' / f'val_{k}.png')
    lines.append(f'val_{k}.png\t{wnids[k % len(wnids)]}\t0\t0\t7\t7')
    val_images.append(image)
  (base / 'val' / 'val_annotations.txt').write_text('\n'.join(lines) + '\n')
  return train, np.stack(val_images), [wnids[k % len(wnids)] for k in range(val)]


def test_tiny_imagenet_reads_the_official_layout(tmp_path):
  train_written, val_images, val_wnids = write_tiny_imagenet(tmp_path, np.random.default_rng(10))
  train, val, wnids = sources.read_tiny_imagenet(tmp_path, cache_dir=tmp_path / 'cache')
  assert wnids == ['n01', 'n02', 'n03']  # sorted, as torchvision's ImageFolder orders them
  expected = [(w, k) for w in wnids for k in range(2)]
  np.testing.assert_array_equal(train.images, np.stack([train_written[e] for e in expected]))
  np.testing.assert_array_equal(train.labels, [wnids.index(w) for w, _ in expected])
  np.testing.assert_array_equal(val.images, val_images)
  np.testing.assert_array_equal(val.labels, [wnids.index(w) for w in val_wnids])
  again = sources.read_tiny_imagenet(tmp_path / 'tiny-imagenet-200', cache_dir=tmp_path / 'cache')
  np.testing.assert_array_equal(again[0].images, train.images)  # through the .npy cache


def test_tiny_imagenet_without_val_annotations_is_refused(tmp_path):
  write_tiny_imagenet(tmp_path, np.random.default_rng(11))
  (tmp_path / 'tiny-imagenet-200' / 'val' / 'val_annotations.txt').unlink()
  with pytest.raises(sources.DataUnavailableError, match='val_annotations.txt is missing'):
    sources.read_tiny_imagenet(tmp_path)


def test_a_tfds_download_without_its_extra_is_one_line():
  """The `tfds` extra's documented path: either everything it imports is installed, or the
  command says in one line which extra to install, before TFDS is called."""
  import importlib.util

  import ml_collections

  config = ml_collections.ConfigDict(
    dict(source='tfds', name='cifar100', download=True, data_dir='')
  )
  if all(importlib.util.find_spec(m) for m in sources.TFDS_DOWNLOAD_NEEDS):
    for module in sources.TFDS_DOWNLOAD_NEEDS:
      __import__(module)
    return
  with pytest.raises(sources.DataUnavailableError, match=r"TFDS's download needs .*\[tfds\]"):
    sources.check_available(config)
