"""Data sources: each returns a `Dataset` of uint8 NHWC arrays, fully in host memory.

All CIFAR-sized data fits in memory (and on the device), which makes batching and augmentation a
matter of indexing on the accelerator. Sources: `cifar` (the official archives, cifar.py),
`tiny_imagenet` (the official folder), `tfds`, `image_folder`, `digits` (sklearn),
`fashion_mnist` (official IDX files), `arrays` (in-memory, for programmatic use).
"""

import gzip
import hashlib
import os
import pathlib

import numpy as np

from ckd_jax.data import cifar
from ckd_jax.data.dataset import Dataset, FileSplit, Split, channel_stats, decode_image
from ckd_jax.distributed import is_primary

# Published normalisation constants; other datasets use statistics of their training split (of
# its first STATS_SAMPLE images when it is streamed).
NORMALIZATION = {
  'cifar100': ((0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)),
  'cifar10': ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
  'imagenet2012': ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),  # torchvision's
}
STATS_SAMPLE = 1000

FASHION_MNIST_DIR = '/usr/share/datasets/fashion-mnist'
IMAGE_SUFFIXES = ('.jpg', '.jpeg', '.png', '.bmp')


class DataUnavailableError(FileNotFoundError):
  """The data is not on this machine; the message says how to provide it."""


def _make_dataset(name, train, test, num_classes):
  sample = train.take(STATS_SAMPLE) if isinstance(train, FileSplit) else train
  mean, std = NORMALIZATION.get(name) or channel_stats(sample.in_memory().images)
  return Dataset(name, train, test, num_classes, mean, std)


# ----------------------------------------------------------------------------------------- arrays
def from_arrays(name, train_images, train_labels, test_images, test_labels, num_classes=None):
  """Wraps in-memory arrays; greyscale (N, H, W) images get a channel axis."""

  def split(images, labels):
    images = np.asarray(images)
    images = images[..., None] if images.ndim == 3 else images
    return Split(images.astype(np.uint8), np.asarray(labels, dtype=np.int32))

  train, test = split(train_images, train_labels), split(test_images, test_labels)
  num_classes = num_classes or int(max(train.labels.max(), test.labels.max())) + 1
  return _make_dataset(name, train, test, num_classes)


# ----------------------------------------------------------------------------------------- digits
def load_digits(test_fraction=0.2, seed=0):
  """sklearn's 1,797 real 8×8 digits, rescaled to uint8, split once with a fixed permutation."""
  pixels, target = _sklearn_digits()
  images = np.round(pixels.reshape(-1, 8, 8) * (255.0 / 16.0)).astype(np.uint8)[..., None]
  order = np.random.default_rng(seed).permutation(len(images))
  n_test = int(round(len(images) * test_fraction))
  test, train = order[:n_test], order[n_test:]
  return from_arrays(
    'digits', images[train], target[train], images[test], target[test], num_classes=10
  )


def _sklearn_digits():
  """(pixels 0-16 (N, 64), labels) from the CSV that sklearn ships, read as its `load_digits`
  reads it but without importing sklearn (which imports scipy); through sklearn if the file
  moved."""
  import importlib.util

  spec = importlib.util.find_spec('sklearn')
  path = pathlib.Path(spec.origin).parent / 'datasets' / 'data' / 'digits.csv.gz' if spec else None
  if path is None or not path.is_file():
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    return bunch.data, bunch.target
  data = np.loadtxt(path, delimiter=',')
  return data[:, :-1], data[:, -1].astype(int)


# ---------------------------------------------------------------------------------- fashion_mnist
def read_idx(path):
  """Reads an IDX file (optionally gzipped): the format of MNIST and Fashion-MNIST."""
  opener = gzip.open if str(path).endswith('.gz') else open
  with opener(path, 'rb') as f:
    data = f.read()
  if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
    raise ValueError(f'{path} is not an unsigned-byte IDX file')
  ndim = data[3]
  shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], 'big') for i in range(ndim))
  array = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
  if array.size != int(np.prod(shape)):
    raise ValueError(f'{path}: header says {shape} but holds {array.size} bytes')
  return array.reshape(shape)


def _find_idx(root, stem):
  for candidate in (root / stem, root / f'{stem}.gz'):
    if candidate.exists():
      return candidate
  raise DataUnavailableError(
    f'Fashion-MNIST file {stem}[.gz] not found in {root}. Install it with '
    '`apt-get install dataset-fashion-mnist` (Debian) or set config.data.root to a folder '
    'with the official IDX files.'
  )


def _fashion_mnist_files(root):
  root = pathlib.Path(root or FASHION_MNIST_DIR)
  return [
    _find_idx(root, stem)
    for stem in (
      'train-images-idx3-ubyte',
      'train-labels-idx1-ubyte',
      't10k-images-idx3-ubyte',
      't10k-labels-idx1-ubyte',
    )
  ]


def load_fashion_mnist(root=None):
  arrays = [read_idx(path) for path in _fashion_mnist_files(root)]
  return from_arrays('fashion_mnist', *arrays, num_classes=10)


# ----------------------------------------------------------------------------------- image_folder
def _list_images(split_dir, classes):
  files, labels = [], []
  for label, cls in enumerate(classes):
    class_dir = split_dir / cls
    if not class_dir.is_dir():
      continue
    found = sorted(p for p in class_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    files += found
    labels += [label] * len(found)
  return files, np.asarray(labels, dtype=np.int32)


def _decode(files, image_size):
  images = []
  for path in files:
    array = decode_image(path, image_size)
    if images and array.shape != images[0].shape:
      raise ValueError(
        f'{path} is {array.shape[:2]} but {files[0]} is {images[0].shape[:2]}: '
        'set config.data.image_size to resize all images'
      )
    images.append(array)
  return np.stack(images)


def _cache_key(files, image_size):
  digest = hashlib.sha256(str(image_size).encode())
  for path in files:
    stat = path.stat()
    digest.update(f'{path}|{stat.st_size}|{stat.st_mtime_ns}'.encode())
  return digest.hexdigest()[:16]


def _load_folder_split(split_dir, classes, image_size, cache_dir):
  files, labels = _list_images(split_dir, classes)
  if not files:
    raise DataUnavailableError(
      f'No images ({", ".join(IMAGE_SUFFIXES)}) under {split_dir}/<class>/'
    )
  return Split(_decode_cached(files, image_size, cache_dir, split_dir.name), labels)


def _decode_cached(files, image_size, cache_dir, tag):
  """The decoded images of `files`, through a .npy in `cache_dir` keyed on the file list."""
  cache = None
  if cache_dir:
    cache = pathlib.Path(cache_dir) / f'{tag}-{_cache_key(files, image_size)}.npy'
    if cache.exists():
      return np.load(cache)
  images = _decode(files, image_size)
  if cache and is_primary():  # (several processes would write the same file)
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix('.tmp.npy')
    np.save(tmp, images)
    os.replace(tmp, cache)
  return images


def load_image_folder(
  root,
  train_split='train',
  test_split='test',
  image_size=None,
  cache_dir=None,
  name='image_folder',
  stream=False,
  stream_threads=16,
):
  """Reads `<root>/<split>/<class>/*.{jpg,png}`; classes are the sorted train sub-folders.

  Decoding is slow, so the decoded arrays are cached as .npy in `cache_dir` (keyed on the file
  list, sizes and modification times, so a changed folder is decoded again). With `stream`, the
  training split stays files (`FileSplit`), read as it trains, in the order the in-memory split
  would have.
  """
  root = pathlib.Path(root) if root else None
  classes = _image_folder_classes(root, train_split, test_split)
  if stream:
    files, labels = _list_images(root / train_split, classes)
    order = _shuffle_order(len(files))
    train = FileSplit([files[i] for i in order], labels[order], image_size, stream_threads)
  else:
    train = _shuffle_once(_load_folder_split(root / train_split, classes, image_size, cache_dir))
  test = _shuffle_once(_load_folder_split(root / test_split, classes, image_size, cache_dir))
  return _make_dataset(name, train, test, len(classes))


def _image_folder_classes(root, train_split, test_split):
  """The sorted class folders of the train split, once the layout is checked (no image is read)."""
  if root is None or not (root / train_split).is_dir():
    raise DataUnavailableError(
      f'image_folder: no directory {root}/{train_split}. Set config.data.root to a folder laid out '
      'as <root>/<split>/<class>/*.jpg'
    )
  class_dirs = sorted(p for p in (root / train_split).iterdir() if p.is_dir())
  if len(class_dirs) < 2:
    raise ValueError(f'image_folder: need at least 2 class folders in {root / train_split}')
  for class_dir in class_dirs:
    if not any(p.suffix.lower() in IMAGE_SUFFIXES for p in class_dir.iterdir()):
      raise ValueError(
        f'image_folder: class folder {class_dir} holds no images '
        f'({", ".join(IMAGE_SUFFIXES)}); remove it or fill it'
      )
  if not (root / test_split).is_dir():
    raise DataUnavailableError(f'image_folder: no directory {root / test_split}')
  return [p.name for p in class_dirs]


# ------------------------------------------------------------------------------------------ cifar
def load_cifar(name, root, label='fine', download=False):
  """CIFAR-10/100 from the official archives under `root` (cifar.py); `label`: CIFAR-100's 'fine'
  (100 classes) or 'coarse' (20 superclasses)."""
  try:
    train, test, names = cifar.read(name, root, label, download, progress=is_primary())
  except cifar.CifarError as e:
    raise DataUnavailableError(str(e)) from None
  return _make_dataset(name, _shuffle_once(train), _shuffle_once(test), len(names))


def _check_cifar(data_config):
  """The archive or folder is there (unpacked, or downloaded first with `download`)."""
  name, label = data_config.name, data_config.get('label', 'fine')
  cifar.check_name(name, label)
  root = data_config.get('root') or DEFAULT_CIFAR_ROOT
  download = data_config.get('download', False)
  if download and not is_primary() and cifar.find(name, pathlib.Path(root).expanduser()) is None:
    raise DataUnavailableError(
      f'{name} is not in {root}: with several processes, fetch it first '
      'with a single-process run (--config.stages=teacher stops after it)'
    )
  try:
    cifar.ensure_available(name, root, download and is_primary(), progress=True)
  except cifar.CifarError as e:
    raise DataUnavailableError(str(e)) from None


# Where the official PyTorch code (torchvision's `root='./data'`) leaves its copy, so that a user
# of that code finds theirs without a flag.
DEFAULT_CIFAR_ROOT = './data'


# ----------------------------------------------------------------------------------- tiny_imagenet
def _tiny_imagenet_root(root):
  """The `tiny-imagenet-200/` folder: `root` itself or inside it, with its files checked."""
  root = pathlib.Path(root or '.').expanduser()
  if (root / 'tiny-imagenet-200').is_dir():
    root = root / 'tiny-imagenet-200'
  if not (root / 'wnids.txt').is_file() or not (root / 'train').is_dir():
    raise DataUnavailableError(
      f'tiny_imagenet: no wnids.txt and train/ in {root}: set --config.data.root to the folder '
      'that tiny-imagenet-200.zip unpacks to (or the one that holds it)'
    )
  if not (root / 'val' / 'val_annotations.txt').is_file():
    raise DataUnavailableError(
      f'tiny_imagenet: {root}/val/val_annotations.txt is missing: the '
      "val split's labels are in it; unzip the archive again"
    )
  return root


def read_tiny_imagenet(root, image_size=None, cache_dir=None):
  """(train Split, val Split, wnids) of the official layout: train/<wnid>/images/*, the val
  images labelled by val/val_annotations.txt; classes are the sorted wnids of wnids.txt (the
  order of torchvision's ImageFolder). The unlabelled test split is not read."""
  root = _tiny_imagenet_root(root)
  wnids = sorted(
    {line.split()[0] for line in (root / 'wnids.txt').read_text().splitlines() if line.strip()}
  )
  index = {wnid: i for i, wnid in enumerate(wnids)}
  train_files, train_labels = [], []
  for wnid in wnids:
    images = root / 'train' / wnid / 'images'
    found = (
      sorted(p for p in images.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
      if (images.is_dir())
      else []
    )
    if not found:
      raise DataUnavailableError(f'tiny_imagenet: no images in {images}')
    train_files += found
    train_labels += [index[wnid]] * len(found)
  val_files, val_labels = [], []
  annotations = root / 'val' / 'val_annotations.txt'
  for number, line in enumerate(annotations.read_text().splitlines(), 1):
    fields = line.split('\t')
    if not line.strip():
      continue
    if len(fields) < 2 or fields[1] not in index:
      raise ValueError(f'{annotations}:{number}: {line!r} names no class of wnids.txt')
    path = root / 'val' / 'images' / fields[0]
    if not path.is_file():
      raise DataUnavailableError(f'tiny_imagenet: {path} (listed in {annotations}) is missing')
    val_files.append(path)
    val_labels.append(index[fields[1]])

  def split(files, labels, tag):
    return Split(
      _decode_cached(files, image_size, cache_dir, tag), np.asarray(labels, dtype=np.int32)
    )

  return (
    split(train_files, train_labels, 'tiny-train'),
    split(val_files, val_labels, 'tiny-val'),
    wnids,
  )


def load_tiny_imagenet(root, image_size=None, cache_dir=None):
  """Tiny-ImageNet's train and val splits (`read_tiny_imagenet`), decoded once into `cache_dir`
  (default: tiny-imagenet-200/decoded)."""
  cache_dir = cache_dir or _tiny_imagenet_root(root) / 'decoded'
  train, val, wnids = read_tiny_imagenet(root, image_size, cache_dir)
  return _make_dataset('tiny_imagenet', _shuffle_once(train), _shuffle_once(val), len(wnids))


# ------------------------------------------------------------------------------------------- tfds
def _check_prepared(builder, name, data_dir):
  if not builder.is_prepared():
    raise DataUnavailableError(
      f'TFDS dataset {name!r} is not prepared in {data_dir or "~/tensorflow_datasets"}. '
      'Either run once with network and --config.data.download=True, point '
      '--config.data.data_dir at a folder that holds it (array_record format, or TFRecord '
      'with tensorflow installed), or convert it to <root>/<split>/<class>/*.png and use '
      '--config.data.source=image_folder.'
    )


def _tfds_split(tfds, builder, name, split, data_dir, download):
  try:
    source = tfds.data_source(name, split=split, data_dir=data_dir, download=download)
  except (
    NotImplementedError,
    KeyError,
    FileNotFoundError,
  ):  # absent, or TFRecord (no random access)
    _check_prepared(builder, name, data_dir)
    return _tfds_split_via_tensorflow(tfds, builder, split)
  examples = [source[i] for i in range(len(source))]
  return Split(
    np.stack([np.asarray(e['image']) for e in examples]).astype(np.uint8),
    np.asarray([e['label'] for e in examples], dtype=np.int32),
  )


def _tfds_split_via_tensorflow(tfds, builder, split):
  try:
    import tensorflow  # noqa: F401  (TFRecord datasets can only be read through TensorFlow)
  except ImportError:
    raise DataUnavailableError(
      f'{builder.name} is prepared as TFRecord, which needs tensorflow to read: '
      "`pip install -e .[tfds]`, or prepare it with file_format='array_record'."
    ) from None
  data = tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1))
  return Split(data['image'].astype(np.uint8), data['label'].astype(np.int32))


# What TFDS's download and preparation import beyond tensorflow-datasets itself (its builders read
# the archives through tf.io.gfile; etils' resources need importlib_resources): the `tfds` extra.
TFDS_DOWNLOAD_NEEDS = ('tensorflow', 'importlib_resources')


def _check_tfds_download_needs():
  import importlib.util

  missing = [m for m in TFDS_DOWNLOAD_NEEDS if importlib.util.find_spec(m) is None]
  if missing:
    raise DataUnavailableError(
      f"TFDS's download needs {' and '.join(missing)}, which are not installed: "
      "pip install -e '.[tfds]', or read the official CIFAR archives without TFDS with "
      '--config.data.source=cifar'
    )


def _tfds_builder(name, data_dir):
  import tensorflow_datasets as tfds  # lazy: heavy import, only this source needs it

  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except tfds.core.registered.DatasetNotFoundError:
    raise ValueError(f'TFDS has no dataset named {name!r}') from None
  features = builder.info.features
  if 'image' not in features or 'label' not in features:
    raise ValueError(f'TFDS dataset {name!r} has no image/label features')
  return tfds, builder


def load_tfds(name, data_dir=None, download=False, train_split='train', test_split='test'):
  """Any TFDS image-classification dataset with `image` and `label` features."""
  tfds, builder = _tfds_builder(name, data_dir)
  features = builder.info.features
  splits = [
    _tfds_split(tfds, builder, name, s, data_dir, download) for s in (train_split, test_split)
  ]
  return _make_dataset(
    name, _shuffle_once(splits[0]), _shuffle_once(splits[1]), features['label'].num_classes
  )


def _shuffle_once(split, seed=0):
  """A fixed permutation, so that `Split.take(n)` (train_examples / test_examples) is a random
  subset and not, e.g., the first classes of a folder read class by class."""
  order = _shuffle_order(len(split), seed)
  return Split(split.images[order], split.labels[order])


def _shuffle_order(n, seed=0):
  return np.random.default_rng(seed).permutation(n)


# ------------------------------------------------------------------------------------- dispatcher
SOURCES = ('cifar', 'tiny_imagenet', 'tfds', 'image_folder', 'digits', 'fashion_mnist')


def check_available(data_config):
  """Raises at once, reading no image, when the data of `config.data` is not there or is laid
  out wrongly: the pipeline calls it before it writes anything to the workdir."""
  source = data_config.source
  if source == 'cifar':
    _check_cifar(data_config)
  elif source == 'tiny_imagenet':
    _tiny_imagenet_root(data_config.get('root'))
  elif source == 'tfds':
    if data_config.get('download', False):
      _check_tfds_download_needs()
    _, builder = _tfds_builder(data_config.name, data_config.get('data_dir') or None)
    if not data_config.get('download', False):
      _check_prepared(builder, data_config.name, data_config.get('data_dir') or None)
  elif source == 'image_folder':
    root = data_config.get('root')
    _image_folder_classes(pathlib.Path(root) if root else None, 'train', 'test')
  elif source == 'fashion_mnist':
    _fashion_mnist_files(data_config.get('root') or None)
  elif source != 'digits':
    raise _unknown_source(source)


def _unknown_source(source):
  return ValueError(
    f'Unknown data source {source!r}; choose one of {SOURCES} '
    '(or build a Dataset with ckd_jax.data.from_arrays)'
  )


def load_dataset(data_config):
  """Loads `config.data` → Dataset, optionally cut to `train_examples` / `test_examples`."""
  source = data_config.source
  if source == 'cifar':
    dataset = load_cifar(
      data_config.name,
      data_config.get('root') or DEFAULT_CIFAR_ROOT,
      data_config.get('label', 'fine'),
      data_config.get('download', False),
    )
  elif source == 'tiny_imagenet':
    dataset = load_tiny_imagenet(
      data_config.get('root'),
      data_config.get('image_size') or None,
      data_config.get('cache_dir') or None,
    )
  elif source == 'tfds':
    dataset = load_tfds(
      data_config.name, data_config.get('data_dir') or None, data_config.get('download', False)
    )
  elif source == 'image_folder':
    dataset = load_image_folder(
      data_config.get('root'),
      image_size=data_config.get('image_size'),
      cache_dir=data_config.get('cache_dir') or None,
      name=data_config.get('name') or 'image_folder',
      stream=data_config.get('stream', False),
      stream_threads=data_config.get('stream_threads', 16),
    )
  elif source == 'digits':
    dataset = load_digits()
  elif source == 'fashion_mnist':
    dataset = load_fashion_mnist(data_config.get('root') or None)
  else:
    raise _unknown_source(source)
  return Dataset(
    dataset.name,
    dataset.train.take(data_config.get('train_examples', 0)),
    dataset.test.take(data_config.get('test_examples', 0)),
    dataset.num_classes,
    dataset.mean,
    dataset.std,
  )
