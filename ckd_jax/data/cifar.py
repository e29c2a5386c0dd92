"""CIFAR-10/100 from the official archives, as users of the PyTorch code already hold them.

Read from `root`: the python version (`cifar-100-python/`, `cifar-10-batches-py/`: the folder
torchvision leaves in `./data`), the binary version (`cifar-100-binary/`, `cifar-10-batches-bin/`),
or one of their `.tar.gz` archives, unpacked once into `root`. With `download`, a missing python
archive is fetched over HTTPS, checked against its published MD5 and written atomically. Numpy
only: no TensorFlow, torch or TFDS.

The python version is pickled; it is read with an unpickler that admits only the types those files
hold (numpy arrays, dtypes and byte strings), so a pickle that names anything else (which could
run code) is refused, not executed.
"""

import hashlib
import os
import pathlib
import pickle
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import zlib

import numpy as np

from ckd_jax.data.dataset import Split

OFFICIAL_BASE_URL = 'https://www.cs.toronto.edu/~kriz/'
# Tests and mirrors only: another base URL for the archives, and the MD5 its archive has.
MIRROR_ENV, MIRROR_MD5_ENV = 'CKD_JAX_CIFAR_MIRROR', 'CKD_JAX_CIFAR_MIRROR_MD5'
LABELS = ('fine', 'coarse')


class CifarFormat:
  """One official layout: its folder, archive (name, MD5) and files."""

  def __init__(self, folder, archive, md5, train, test, meta, binary):
    self.folder, self.archive, self.md5 = folder, archive, md5
    self.train, self.test, self.meta, self.binary = train, test, meta, binary


FORMATS = {
  'cifar10': (
    CifarFormat(
      'cifar-10-batches-py',
      'cifar-10-python.tar.gz',
      'c58f30108f718f92721af3b95e74349a',
      [f'data_batch_{i}' for i in range(1, 6)],
      ['test_batch'],
      'batches.meta',
      binary=False,
    ),
    CifarFormat(
      'cifar-10-batches-bin',
      'cifar-10-binary.tar.gz',
      'c32a1d4ab5d03f1284b67883e8d87530',
      [f'data_batch_{i}.bin' for i in range(1, 6)],
      ['test_batch.bin'],
      'batches.meta.txt',
      binary=True,
    ),
  ),
  'cifar100': (
    CifarFormat(
      'cifar-100-python',
      'cifar-100-python.tar.gz',
      'eb9058c3a382ffc7106e4002c42a8d85',
      ['train'],
      ['test'],
      'meta',
      binary=False,
    ),
    CifarFormat(
      'cifar-100-binary',
      'cifar-100-binary.tar.gz',
      '03b5dce01913d631647c71ecec9e9cb8',
      ['train.bin'],
      ['test.bin'],
      'fine_label_names.txt',
      binary=True,
    ),
  ),
}
NUM_CLASSES = {('cifar10', 'fine'): 10, ('cifar100', 'fine'): 100, ('cifar100', 'coarse'): 20}
IMAGE_BYTES = 32 * 32 * 3


class CifarError(FileNotFoundError):
  """The archive or folder is missing, incomplete or damaged; the message says what to do."""


def check_name(name, label='fine'):
  if name not in FORMATS:
    raise ValueError(f"data.source='cifar' reads cifar10 or cifar100, not data.name={name!r}")
  if label not in LABELS or (name, label) not in NUM_CLASSES:
    raise ValueError(
      f"data.label={label!r} is not a label set of {name} (cifar10: 'fine'; "
      "cifar100: 'fine', the 100 classes, or 'coarse', the 20 superclasses)"
    )


def find(name, root):
  """The first official layout present under `root` as a folder or an archive, else None."""
  root = pathlib.Path(root)
  for fmt in FORMATS[name]:
    if (root / fmt.folder).is_dir() or (root / fmt.archive).is_file():
      return fmt
  return None


def ensure_available(name, root, download=False, progress=True):
  """Makes sure an official layout of `name` is under `root`, unpacking an archive or (with
  `download`) fetching the python archive first; returns its format. Raises CifarError with
  what to do when that cannot be."""
  root = pathlib.Path(root).expanduser()
  fmt = find(name, root)
  if fmt is None:
    fmt = FORMATS[name][0]
    if not download:
      raise CifarError(
        f'{name}: neither {fmt.folder}/ nor {fmt.archive} is in {root}. Set '
        '--config.data.download=True to fetch it, put the official archive (or the folder '
        "torchvision's datasets leave in ./data) there, or point --config.data.root at it"
      )
    fetch(fmt, root, progress)
  if not (root / fmt.folder).is_dir():
    unpack(root / fmt.archive, root, fmt.folder)
  _check_files(fmt, root / fmt.folder)
  return fmt


def archive_url(fmt):
  return (os.environ.get(MIRROR_ENV) or OFFICIAL_BASE_URL).rstrip('/') + '/' + fmt.archive


def fetch(fmt, root, progress=True):
  """Downloads the archive of `fmt` into `root` through a `.part` file that becomes the archive
  only once its MD5 matches; any failure removes the partial file and raises CifarError."""
  url, target = archive_url(fmt), root / fmt.archive
  part = target.with_name(target.name + '.part')
  root.mkdir(parents=True, exist_ok=True)
  digest = hashlib.md5()
  try:
    with urllib.request.urlopen(url, timeout=60) as response, open(part, 'wb') as out:
      total = int(response.headers.get('Content-Length') or 0) or None
      from tqdm import tqdm

      with tqdm(
        total=total,
        unit='B',
        unit_scale=True,
        desc=f'downloading {fmt.archive}',
        disable=not progress,
      ) as bar:
        while chunk := response.read(1 << 20):
          out.write(chunk)
          digest.update(chunk)
          bar.update(len(chunk))
      if total is not None and out.tell() != total:
        raise OSError(f'the connection closed after {out.tell()} of {total} bytes')
  except (urllib.error.URLError, OSError, ValueError) as e:
    part.unlink(missing_ok=True)
    reason = getattr(e, 'reason', None) or e
    raise CifarError(
      f'cannot download {url} ({reason}): retry, or put {fmt.archive} into {root} by hand'
    ) from None
  expected = (os.environ.get(MIRROR_MD5_ENV) if os.environ.get(MIRROR_ENV) else None) or fmt.md5
  if digest.hexdigest() != expected:
    part.unlink()
    raise CifarError(
      f'{url} has MD5 {digest.hexdigest()}, not the published {expected}; the '
      f'partial file was removed: retry, or put {fmt.archive} into {root} by hand'
    )
  os.replace(part, target)


def unpack(archive, root, folder):
  """Unpacks `folder` out of `archive` into `root` through a temporary folder, so that a
  killed or failed unpack never leaves a folder that looks complete."""
  scratch = pathlib.Path(tempfile.mkdtemp(prefix='.unpack-', dir=root))
  try:
    try:
      with tarfile.open(archive) as tar:
        members = [m for m in tar.getmembers() if m.isdir() or m.isfile()]
        for member in members:
          path = pathlib.PurePosixPath(member.name)
          if path.is_absolute() or '..' in path.parts:
            raise tarfile.TarError(f'unsafe member name {member.name!r}')
        tar.extractall(scratch, members=members)
    except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
      raise CifarError(
        f'{archive} is damaged ({type(e).__name__}: {e}): delete it and rerun '
        '(with --config.data.download=True to fetch it again)'
      ) from None
    if not (scratch / folder).is_dir():
      raise CifarError(
        f'{archive} holds no {folder}/: it is not the official archive; delete it and rerun'
      )
    os.replace(scratch / folder, root / folder)
  finally:
    shutil.rmtree(scratch, ignore_errors=True)


def _check_files(fmt, folder):
  missing = [f for f in fmt.train + fmt.test + [fmt.meta] if not (folder / f).is_file()]
  if missing:
    raise CifarError(
      f'{folder} is incomplete (no {", ".join(missing)}): delete it and rerun to '
      'unpack or download it again'
    )


# ------------------------------------------------------------------------------------- reading
class _RestrictedUnpickler(pickle.Unpickler):
  """Admits the globals that a pickled numpy array needs and nothing else."""

  ALLOWED = {
    ('numpy', 'ndarray'),
    ('numpy', 'dtype'),
    ('numpy.core.multiarray', '_reconstruct'),
    ('numpy._core.multiarray', '_reconstruct'),
    ('_codecs', 'encode'),
  }

  def find_class(self, module, name):
    if (module, name) not in self.ALLOWED:
      raise pickle.UnpicklingError(f'it names {module}.{name}, which a CIFAR file never holds')
    return super().find_class(module, name)


def load_pickle(path):
  """A CIFAR python-version file: a dict with bytes keys (latin-1 strings decoded as bytes)."""
  try:
    with open(path, 'rb') as f:
      data = _RestrictedUnpickler(f, encoding='bytes').load()
  except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as e:
    raise CifarError(f'{path} is not a CIFAR file ({e}): delete its folder and rerun') from None
  if not isinstance(data, dict):
    raise CifarError(f'{path} is not a CIFAR file (it holds a {type(data).__name__}, not a dict)')
  return {(k.decode() if isinstance(k, bytes) else k): v for k, v in data.items()}


def _images_from_rows(rows, path):
  rows = np.asarray(rows, dtype=np.uint8)
  if rows.ndim != 2 or rows.shape[1] != IMAGE_BYTES:
    raise CifarError(f'{path}: images of shape {rows.shape}, not (N, {IMAGE_BYTES})')
  return rows.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # channel-major rows -> NHWC


def _read_python(path, label_key):
  data = load_pickle(path)
  if 'data' not in data or label_key not in data:
    raise CifarError(f'{path} has no {label_key!r} (keys: {sorted(data)}): not this dataset')
  return _images_from_rows(data['data'], path), np.asarray(data[label_key], dtype=np.int64)


def _read_binary(path, label_offset, label_bytes):
  raw = np.fromfile(path, dtype=np.uint8)
  record = label_bytes + IMAGE_BYTES
  if raw.size == 0 or raw.size % record:
    raise CifarError(
      f'{path} is truncated ({raw.size} bytes, not a multiple of the {record}-byte '
      'record): delete its folder and rerun'
    )
  records = raw.reshape(-1, record)
  return _images_from_rows(records[:, label_bytes:], path), records[:, label_offset].astype(
    np.int64
  )


def class_names(name, fmt, folder, label='fine'):
  if fmt.binary:
    meta = folder / ('batches.meta.txt' if name == 'cifar10' else f'{label}_label_names.txt')
    return [line.strip() for line in meta.read_text().splitlines() if line.strip()]
  key = 'label_names' if name == 'cifar10' else f'{label}_label_names'
  return [
    n.decode() if isinstance(n, bytes) else str(n) for n in load_pickle(folder / fmt.meta)[key]
  ]


def read(name, root, label='fine', download=False, progress=True):
  """(train Split, test Split, class names) in the files' own order."""
  check_name(name, label)
  root = pathlib.Path(root).expanduser()
  fmt = ensure_available(name, root, download, progress)
  folder = root / fmt.folder
  num_classes = NUM_CLASSES[(name, label)]
  label_key = 'labels' if name == 'cifar10' else f'{label}_labels'
  label_offset = 1 if name == 'cifar100' and label == 'fine' else 0
  label_bytes = 1 if name == 'cifar10' else 2

  def split(files):
    parts = [
      _read_binary(folder / f, label_offset, label_bytes)
      if fmt.binary
      else _read_python(folder / f, label_key)
      for f in files
    ]
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    bad = (labels < 0) | (labels >= num_classes)
    if bad.any():
      raise CifarError(
        f'{folder}: label {int(labels[bad][0])} is outside 0..{num_classes - 1} '
        f'for {name} ({label} labels): the files are damaged or not {name}'
      )
    return Split(images, labels.astype(np.int32))

  names = class_names(name, fmt, folder, label)
  if len(names) != num_classes:
    raise CifarError(f'{folder}: {len(names)} class names, not {num_classes}')
  return split(fmt.train), split(fmt.test), names
