"""The estimators behind one interface, each written for one snapshot and `vmap`ped over the
snapshot axis inside ONE jitted program (settings are static, so each configuration compiles once).
"""

import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np

from ckd_jax.data.dataset import Split
from ckd_jax.mi.binning import binning_mi
from ckd_jax.mi.features import extract_features
from ckd_jax.mi.infopro import infopro_mi
from ckd_jax.mi.kde import kde_mi
from ckd_jax.mi.variational import variational_mi

METHODS = ('variational', 'kde', 'binning', 'infopro')
# Estimators that fit a probe/decoder on one set of images and are evaluated on another.
FITTED = ('variational', 'infopro')
# infopro reads the spatial map before pooling, whatever select.feature says (its definition).
_OWN_FEATURE = {'infopro': 'spatial'}


def feature_of(method, feature):
  """The feature `method` reads when `feature` is asked for (what mi.json must record)."""
  return _OWN_FEATURE.get(method, feature)


SPLITS = ('train', 'test')


def check_method(method, what='MI method'):
  if method not in METHODS:
    raise ValueError(f'Unknown {what} {method!r}; choose one of {METHODS}')


def parse_methods(text, what='select.method'):
  """'kde' -> ('kde',); 'kde,variational' -> both, in that order; 'all' -> METHODS."""
  methods = METHODS if text == 'all' else tuple(m.strip() for m in str(text).split(','))
  for method in methods:
    check_method(method, what)
  if len(set(methods)) != len(methods):
    raise ValueError(f'{what} names an estimator twice: {text!r}')
  return methods


def _check_inputs(labels, num_classes):
  if num_classes < 2:
    raise ValueError(f'need at least 2 classes, got {num_classes}')
  if labels.shape[0] < num_classes:
    raise ValueError(
      f'{labels.shape[0]} samples cannot estimate MI over {num_classes} classes: use more samples'
    )


def _one_snapshot(method, settings, num_classes, seed):
  """(fit_f, fit_y, eval_f, eval_y, fit_x, eval_x) -> {'I_XF', 'I_YF'} for one snapshot."""

  def run(fit_f, fit_y, eval_f, eval_y, fit_x, eval_x):
    if method == 'kde':
      return kde_mi(eval_f, eval_y, num_classes, **settings)
    if method == 'binning':
      return binning_mi(eval_f, eval_y, num_classes, **settings)
    if method == 'infopro':
      return infopro_mi(
        fit_f, fit_y, eval_f, eval_y, num_classes, fit_x, eval_x, seed=seed, **settings
      )
    return variational_mi(
      fit_f, fit_y, eval_f, eval_y, num_classes, fit_x, eval_x, seed=seed, **settings
    )

  return run


@functools.partial(jax.jit, static_argnames=('method', 'settings', 'num_classes'))
def _stacked_program(
  fit_f, fit_y, eval_f, eval_y, fit_x, eval_x, eval_index, seeds, *, method, settings, num_classes
):
  """ONE compiled program for all repeats and snapshots: features have a leading snapshot axis;
  repeat r evaluates on the samples `eval_index[r]` with probe/decoder seed `seeds[r]`."""

  def one_repeat(index, seed):
    run = _one_snapshot(method, _thaw(settings), num_classes, seed)
    x = None if eval_x is None else eval_x[index]
    return jax.vmap(run, in_axes=(0, None, 0, None, None, None))(
      fit_f, fit_y, eval_f[:, index], eval_y[index], fit_x, x
    )

  return jax.vmap(one_repeat)(eval_index, seeds)


class _Frozen(tuple):
  """Settings as a hashable (static) jit argument; nested dicts stay recognisable."""


def _freeze(settings):
  return _Frozen(sorted((k, _freeze(v) if isinstance(v, dict) else v) for k, v in settings.items()))


def _thaw(frozen):
  return {k: _thaw(v) if isinstance(v, _Frozen) else v for k, v in frozen}


class StackedEstimator:
  """The compiled-once program `(fit_f, fit_y, eval_f, eval_y, fit_x, eval_x, eval_index, seeds)
  -> {'I_XF': (R, S), 'I_YF': (R, S), …}` on stacked features (S, N, d), for R repeats (see
  `repeat_plan`); `lower(...)` gives XLA's cost and memory analysis (benchmarks)."""

  def __init__(self, method, num_classes, **settings):
    check_method(method)
    settings = {k: v for k, v in settings.items() if k != 'seed'}  # the seed is per repeat
    self._static = dict(method=method, settings=_freeze(settings), num_classes=num_classes)

  def __call__(self, *arrays):
    return _stacked_program(*arrays, **self._static)

  def lower(self, *arrays):
    return _stacked_program.lower(*arrays, **self._static)


def repeat_plan(num_samples, repeats=None, seed=0, subsample=0.5):
  """(eval_index (R, M), seeds (R,)): which evaluation samples and which probe/decoder seed each
  repeat uses. `repeats=None`: one estimate on all samples with `seed`. Otherwise every repeat
  draws a half-sample without replacement (M = ⌊subsample·N⌋) and uses seed + r: the spread of
  half-sample estimates estimates the sampling error of the full-sample one (McCarthy's
  half-sampling), and without replacement no sample meets itself twice, which would inflate
  kde and binning as duplicates do."""
  if repeats is None:
    return np.arange(num_samples, dtype=np.int32)[None], np.asarray([seed], np.int32)
  if repeats < 2 or not 0 < subsample <= 1:
    raise ValueError(f'repeats must be >= 2 and subsample in (0, 1], got {repeats}, {subsample}')
  size = int(subsample * num_samples)
  rng = np.random.default_rng(seed)
  index = np.stack([np.sort(rng.permutation(num_samples)[:size]) for _ in range(repeats)])
  return index.astype(np.int32), (seed + np.arange(repeats)).astype(np.int32)


def estimate_stacked(
  features,
  labels,
  num_classes,
  method='kde',
  images=None,
  fit_features=None,
  fit_labels=None,
  fit_images=None,
  repeats=None,
  subsample=0.5,
  **settings,
):
  """I(X;F), I(Y;F) for stacked features (S, N, d) -> {'I_XF': (S,), 'I_YF': (S,)} (numpy), or
  (R, S) arrays with `repeats=R` (half-samples and probe/decoder seeds, see `repeat_plan`).

  kde and binning use (features, labels). variational and infopro fit on (fit_features,
  fit_labels[, fit_images]) and evaluate on (features, labels[, images]); images are float in
  [0, 1], (N, H, W, C) (variational flattens them). infopro's features are spatial maps
  (S, N, h, w, c), and it needs the images.
  """
  check_method(method)
  labels = jnp.asarray(labels, jnp.int32)
  _check_inputs(labels, num_classes)
  if method != 'infopro':  # spatial maps, for the vector estimators, are vectors
    flat = lambda f: f if f is None or np.ndim(f) <= 3 else jnp.reshape(f, f.shape[:2] + (-1,))
    features, fit_features = flat(features), flat(fit_features)
  if method in FITTED:
    if fit_features is None:
      raise ValueError(f'method={method!r} needs fit_features and fit_labels (a training split)')
    if method == 'infopro' and (images is None or fit_images is None or np.ndim(features) != 5):
      raise ValueError(
        "method='infopro' needs spatial maps (S, N, h, w, c) as features and "
        'images= and fit_images= (N, H, W, C)'
      )
    fit_labels = jnp.asarray(fit_labels, jnp.int32)
    shape = (lambda x: x.reshape(x.shape[0], -1)) if method == 'variational' else (lambda x: x)
    as_input = lambda x: None if x is None else shape(jnp.asarray(x, jnp.float32))
    fit_x, eval_x = as_input(fit_images), as_input(images)
  else:
    fit_features, fit_labels, fit_x, eval_x = features, labels, None, None
  program = StackedEstimator(method, num_classes, **settings)
  eval_index, seeds = repeat_plan(labels.shape[0], repeats, settings.get('seed', 0), subsample)
  out = program(
    jnp.asarray(fit_features, jnp.float32),
    fit_labels,
    jnp.asarray(features, jnp.float32),
    labels,
    fit_x,
    eval_x,
    eval_index,
    seeds,
  )
  if repeats is None:
    out = {k: v[0] for k, v in out.items()}
  if method == 'variational' and fit_x is None:
    warnings.warn(
      "method='variational' without images estimates I(Y;F) only: pass images= and "
      'fit_images= for I(X;F)',
      stacklevel=2,
    )
    del out['I_XF']  # absent rather than NaN, so that nothing downstream uses it unknowingly
  return {k: np.asarray(v) for k, v in out.items()}


def estimate(
  features, labels, images=None, method='kde', num_classes=None, eval_fraction=0.5, **settings
):
  """I(X;F) and I(Y;F) of one snapshot's features (N, d) -> {'I_XF': float, 'I_YF': float}.

  For 'variational', the first (1 − eval_fraction) of the samples fit the probe/decoder and the rest
  evaluate it.
  """
  features = jnp.asarray(features, jnp.float32)
  labels = np.asarray(labels)
  num_classes = num_classes or int(labels.max()) + 1
  if method in FITTED:
    split = int(round(features.shape[0] * (1 - eval_fraction)))
    images = None if images is None else np.asarray(images)
    out = estimate_stacked(
      features[None, split:],
      labels[split:],
      num_classes,
      method,
      images=None if images is None else images[split:],
      fit_features=features[None, :split],
      fit_labels=labels[:split],
      fit_images=None if images is None else images[:split],
      **settings,
    )
  else:
    out = estimate_stacked(features[None], labels, num_classes, method, **settings)
  return {k: float(v[0]) for k, v in out.items()}


def estimate_over_snapshots(
  stacked_variables,
  model,
  dataset,
  method='variational',
  feature='penultimate',
  num_samples=2000,
  fit_samples=5000,
  batch_size=500,
  split='train',
  **settings,
):
  """I(X;F) and I(Y;F) of S stacked snapshots, in nats: one compiled forward for the features,
  one compiled program for the estimate.

  Args:
    stacked_variables: the snapshots' variables with a leading axis S
      (`checkpoints.restore_snapshots`).
    model: the flax module of the snapshots (`models.get_model`).
    dataset: a `ckd_jax.data.Dataset`.
    method: one of METHODS; feature: one of FEATURES (infopro always reads 'spatial').
    num_samples, fit_samples, split: which images (`selection_samples`; 'train' reads no test
      image).
    batch_size: the feature extraction chunk.
    **settings: the estimator's settings (e.g. `probe=`, `decoder=`, `noise_variance=`), and
      `repeats=R`, `subsample=` for half-sample repeats.
  Returns:
    {'I_XF': (S,), 'I_YF': (S,)} numpy arrays, or (R, S) with `repeats=R`.
  """
  repeats = {k: settings.pop(k) for k in ('repeats', 'subsample') if k in settings}
  return compare_over_snapshots(
    stacked_variables,
    model,
    dataset,
    {method: settings},
    feature=feature,
    num_samples=num_samples,
    fit_samples=fit_samples,
    batch_size=batch_size,
    split=split,
    **repeats,
  )[method]


def selection_samples(dataset, split='train', num_samples=0, fit_samples=5000):
  """(fit, evaluation) Splits of the estimators: the variational probes and decoders fit on the
  first, every estimator is evaluated on the second.

  'train' (the default): both from the training split and disjoint: the first min(fit_samples,
  N/2) training images fit, the next `num_samples` (0: all the others) evaluate. No test image is
  read, and the estimate describes the images the students are distilled on, with probes judged on
  images they were not fitted on. 'test': the first `num_samples` test images (0: all) evaluate, the
  first `fit_samples` training images fit; this reads test labels, so a selection made with it
  cannot be reported as untouched by the test split.
  """
  n_fit, n_eval = _selection_sizes(dataset, split, num_samples, fit_samples)
  if split == 'test':
    return dataset.train.take(n_fit).in_memory(), dataset.test.take(n_eval)
  part = dataset.train.take(n_fit + n_eval).in_memory()  # (a streamed split is files)
  return (
    Split(part.images[:n_fit], part.labels[:n_fit]),
    Split(part.images[n_fit:], part.labels[n_fit:]),
  )


def selection_labels(dataset, split='train', num_samples=0, fit_samples=5000):
  """The labels of `selection_samples`'s evaluation split, without reading an image."""
  n_fit, n_eval = _selection_sizes(dataset, split, num_samples, fit_samples)
  if split == 'test':
    return dataset.test.take(n_eval).labels
  return np.asarray(dataset.train.labels[n_fit : n_fit + n_eval])


def _selection_sizes(dataset, split, num_samples, fit_samples):
  """(fitting samples, evaluation samples) of `selection_samples`."""
  if split not in SPLITS:
    raise ValueError(f'Unknown select.split {split!r}; choose one of {SPLITS}')
  if split == 'test':
    return min(fit_samples, len(dataset.train)), len(dataset.test.take(num_samples))
  total = len(dataset.train)
  n_fit = min(fit_samples, total // 2)
  return n_fit, min(num_samples or total, total - n_fit)


def compare_over_snapshots(
  stacked_variables,
  model,
  dataset,
  methods,
  feature='penultimate',
  num_samples=2000,
  fit_samples=5000,
  batch_size=500,
  repeats=None,
  subsample=0.5,
  split='train',
):
  """{method: curves} for every `methods` entry (method -> its settings) on the SAME features,
  extracted once (infopro on the spatial maps, its own feature; see `estimate_over_snapshots` for
  the curves and `selection_samples` for the samples)."""
  fit_split, eval_split = selection_samples(dataset, split, num_samples, fit_samples)
  extract = functools.partial(
    extract_features,
    model,
    stacked_variables,
    mean=dataset.mean,
    std=dataset.std,
    batch_size=batch_size,
  )
  pixels = {}  # images in [0, 1], for the fitted estimators: converted once
  if set(methods) & set(FITTED):
    pixels = dict(
      fit_images=fit_split.images.astype(np.float32) / 255.0,
      images=eval_split.images.astype(np.float32) / 255.0,
    )
  curves = {}
  for wanted in dict.fromkeys(feature_of(m, feature) for m in methods):
    same = [m for m in methods if feature_of(m, feature) == wanted]
    features = extract(eval_split.images, feature=wanted)  # once per feature, for all its methods
    fit = {}
    if set(same) & set(FITTED):
      fit = dict(
        fit_features=extract(fit_split.images, feature=wanted),
        fit_labels=fit_split.labels,
        **pixels,
      )
    for method in same:
      curves[method] = estimate_stacked(
        features,
        eval_split.labels,
        dataset.num_classes,
        method,
        repeats=repeats,
        subsample=subsample,
        **(fit if method in FITTED else {}),
        **methods[method],
      )
  return {method: curves[method] for method in methods}
