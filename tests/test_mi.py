"""MI estimators against closed forms, the vectorised path against a loop, and T* selection."""

import functools
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ckd_jax import mi
from ckd_jax.data import load_digits
from ckd_jax.mi import estimation, infopro
from ckd_jax.mi import features as features_module
from ckd_jax.mi.kde import kde_mi as kde_mi_unpatched
from ckd_jax.models import get_model
from ckd_jax.training import init_variables


def np_entropy(values):
  _, counts = np.unique(values, return_counts=True, axis=0)
  p = counts / counts.sum()
  return -np.sum(p * np.log(p))


@pytest.fixture(scope='module')
def discrete():
  """Features that take 6 well-separated values with unequal probabilities; Y = Z mod 4."""
  rng = np.random.default_rng(0)
  z = rng.choice(6, size=1200, p=[0.3, 0.2, 0.2, 0.1, 0.1, 0.1])
  features = (rng.normal(size=(6, 5)) * 10)[z]
  labels = z % 4
  h_t = np_entropy(z)
  h_t_given_y = sum((labels == c).mean() * np_entropy(z[labels == c]) for c in range(4))
  return features.astype(np.float32), labels, h_t, h_t - h_t_given_y


@pytest.mark.parametrize('method', ['kde', 'binning'])
def test_deterministic_discrete_features_give_the_discrete_mi(discrete, method):
  """I(X;T) = H(T) for a deterministic discrete T, and I(Y;T) = H(T) − H(T|Y)."""
  features, labels, i_xt, i_yt = discrete
  got = mi.estimate(features, labels, method=method, num_classes=4)
  assert got['I_XF'] == pytest.approx(i_xt, abs=1e-4)
  assert got['I_YF'] == pytest.approx(i_yt, abs=1e-4)


def test_kde_on_a_gaussian_equals_its_closed_form_and_bounds_the_true_mi():
  """For F ~ N(0, s²) the estimator's large-N value is ½log(1 + s²/σ²) + s²/(2(s² + σ²)),
  which is above the true I(F; F + noise) = ½log(1 + s²/σ²)."""
  rng = np.random.default_rng(1)
  s2, noise = 1.0, 0.1
  f = rng.normal(size=(4000, 1)) * math.sqrt(s2)
  got = mi.estimate(f, np.zeros(4000, int), method='kde', num_classes=2, noise_variance=noise)
  true_mi = 0.5 * math.log(1 + s2 / noise)
  assert got['I_XF'] == pytest.approx(true_mi + s2 / (2 * (s2 + noise)), abs=0.03)
  assert got['I_XF'] > true_mi
  assert got['I_YF'] == pytest.approx(0.0, abs=1e-5)  # one class only: no label information


def test_kde_chunking_does_not_change_the_result(discrete):
  features, labels, _, _ = discrete
  whole = mi.estimate(features, labels, method='kde', num_classes=4, chunk_size=2048)
  chunked = mi.estimate(features, labels, method='kde', num_classes=4, chunk_size=100)
  assert whole == pytest.approx(chunked, rel=1e-5)


def test_probe_bound_approaches_ln_k_minus_conditional_entropy():
  """Labels are a known function of F flipped with probability ε: H(Y|F) in closed form."""
  rng = np.random.default_rng(2)
  k, eps = 5, 0.3

  def sample(n):
    z = rng.integers(0, k, n)
    f = np.eye(k)[z] * 3 + rng.normal(size=(n, k)) * 0.1
    return f.astype(np.float32), np.where(rng.random(n) < eps, rng.integers(0, k, n), z)

  fit_f, fit_y = sample(4000)
  eval_f, eval_y = sample(4000)
  right, wrong = 1 - eps + eps / k, eps / k
  target = math.log(k) + right * math.log(right) + (k - 1) * wrong * math.log(wrong)
  with pytest.warns(UserWarning, match='estimates I\\(Y;F\\) only'):
    got = mi.estimate_stacked(
      eval_f[None],
      eval_y,
      k,
      'variational',
      fit_features=fit_f[None],
      fit_labels=fit_y,
      probe=dict(steps=800, learning_rate=0.05),
    )
  assert got['I_YF'][0] == pytest.approx(target, abs=0.05)
  assert 'I_XF' not in got  # no images given: absent, not NaN


@pytest.mark.parametrize('n,d', [(300, 64), (2000, 64), (2000, 8)])
def test_probe_bound_on_label_independent_features_is_about_zero_not_below(n, d):
  """Features that say nothing about the labels, with few fitting samples per dimension (a probe
  trained to the end memorises them): the early-stopped probe from the prior scores ≈ 0, within
  the held-out sampling error, never clearly below."""
  rng = np.random.default_rng(n + d)
  k = 10
  f = rng.normal(size=(2, n, d)).astype(np.float32)
  y = rng.integers(0, k, (2, n))
  with pytest.warns(UserWarning, match='estimates I\\(Y;F\\) only'):
    got = mi.estimate_stacked(
      f[1][None],
      y[1],
      k,
      'variational',
      fit_features=f[0][None],
      fit_labels=y[0],
      probe=dict(steps=1000, learning_rate=1e-2),
    )
  assert -0.03 < got['I_YF'][0] < 0.05


def test_decoder_bound_sees_information_only_when_there_is_some():
  rng = np.random.default_rng(3)
  f = rng.normal(size=(2000, 4)).astype(np.float32)
  images = 1 / (1 + np.exp(-(f @ rng.normal(size=(4, 16)))))  # a smooth function of f
  labels = rng.integers(0, 2, 2000)
  noise = rng.normal(size=(2000, 4)).astype(np.float32)
  stacked = np.stack([f, noise])
  got = mi.estimate_stacked(
    stacked[:, 1000:],
    labels[1000:],
    2,
    'variational',
    images=images[1000:],
    fit_features=stacked[:, :1000],
    fit_labels=labels[:1000],
    fit_images=images[:1000],
    decoder=dict(steps=500, learning_rate=3e-3),
  )
  informative, independent = got['I_XF']
  assert informative > 10 and abs(independent) < 0.2 * informative


@pytest.fixture(scope='module')
def snapshots():
  """Four differently initialised small nets as 'snapshots', and digits."""
  model = get_model('resnet8_b', 10)
  trees = [init_variables(model, (8, 8, 1), seed) for seed in range(4)]
  return model, trees, load_digits()


def _stack(trees):
  return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


@pytest.mark.parametrize('method', mi.METHODS)
def test_vmapped_estimate_equals_a_loop_and_ignores_snapshot_order(snapshots, method):
  model, trees, dataset = snapshots
  settings = dict(num_samples=200, fit_samples=300)
  if method in mi.FITTED:
    settings.update(probe=dict(steps=50), decoder=dict(steps=50, hidden=32))
  together = mi.estimate_over_snapshots(_stack(trees), model, dataset, method, **settings)
  reversed_order = mi.estimate_over_snapshots(
    _stack(trees[::-1]), model, dataset, method, **settings
  )
  alone = [
    mi.estimate_over_snapshots(_stack([tree]), model, dataset, method, **settings) for tree in trees
  ]
  for key in ('I_XF', 'I_YF'):
    # Tolerance 1e-4 (relative): vmapped and single matmuls may sum in another order.
    np.testing.assert_allclose(reversed_order[key][::-1], together[key], rtol=1e-4, atol=1e-4)
    for i, single in enumerate(alone):
      np.testing.assert_allclose(single[key][0], together[key][i], rtol=1e-4, atol=1e-4)


def test_ten_snapshots_are_one_compiled_program(snapshots, monkeypatch):
  """One trace of the estimator for 10 snapshots, one of the feature program for 3 data chunks
  (a loop over snapshots or chunks would trace again and fail the assertion)."""
  model, trees, dataset = snapshots
  ten = _stack([trees[i % 4] for i in range(10)])
  estimation._stacked_program.clear_cache()
  features_module._features_of_chunk.clear_cache()
  chex.clear_trace_counter()
  monkeypatch.setattr(estimation, 'kde_mi', chex.assert_max_traces(estimation.kde_mi, n=1))
  monkeypatch.setattr(
    features_module, 'normalize', chex.assert_max_traces(features_module.normalize, n=1)
  )
  for _ in range(2):  # a second call reuses the program too
    mi.estimate_over_snapshots(ten, model, dataset, 'kde', num_samples=300, batch_size=128)


def test_features_of_the_stack_equal_each_models_features(snapshots):
  model, trees, dataset = snapshots
  images = dataset.test.images[:50]
  got = mi.extract_features(model, _stack(trees), images, dataset.mean, dataset.std, batch_size=32)
  x = (images / 255.0 - np.array(dataset.mean)) / np.array(dataset.std)
  apply = jax.jit(functools.partial(model.apply, return_features=True))
  for i, tree in enumerate(trees):
    _, expected = apply(tree, jnp.asarray(x, jnp.float32))
    np.testing.assert_allclose(got[i], expected, rtol=1e-4, atol=1e-5)
  logits = mi.extract_features(
    model, _stack(trees[:1]), images, dataset.mean, dataset.std, feature='logits'
  )
  assert logits.shape == (1, 50, 10)
  maps = mi.extract_features(
    model, _stack(trees), images, dataset.mean, dataset.std, feature='spatial', batch_size=32
  )
  chex.assert_shape(maps, (4, 50, 2, 2, 64))  # ResNet-8 on 8×8: the last stage is 2×2
  # The pooled feature is the map's mean over its locations (the head pools what it returns).
  np.testing.assert_allclose(maps.mean(axis=(2, 3)), got, rtol=1e-4, atol=1e-5)


def test_normalisation_and_selection():
  x = [3.0, 5.0, 4.0, 2.0]
  y = [0.1, 0.5, 0.9, 1.0]
  np.testing.assert_allclose(mi.normalize_curve(x), [1 / 3, 1, 2 / 3, 0])
  np.testing.assert_allclose(mi.normalize_curve(x, 'max'), np.array(x) / 5)
  np.testing.assert_allclose(mi.normalize_curve(x, 'none'), x)
  np.testing.assert_allclose(mi.normalize_curve([2.0, 2.0]), [0, 0])
  result = mi.select_teacher([20, 40, 60, 80], x, y)
  np.testing.assert_allclose(result['score'], [1 / 3, 1 + 4 / 9, 2 / 3 + 8 / 9, 1])
  assert result['chosen_epoch'] == 60
  assert mi.select_teacher([20, 40, 60, 80], x, y, weights=(1.0, 0.0))['chosen_epoch'] == 40
  assert mi.select_teacher([20, 40], [1.0, 1.0], [0.0, 0.0])['chosen_epoch'] == 20  # tie: earliest


def test_bad_input_is_refused():
  f = np.zeros((5, 3), np.float32)
  with pytest.raises(ValueError, match='cannot estimate MI over 10 classes'):
    mi.estimate(f, np.arange(5), method='kde', num_classes=10)
  with pytest.raises(ValueError, match='Unknown MI method'):
    mi.estimate(f, np.arange(5) % 2, method='histogram')
  with pytest.raises(ValueError, match='normalization'):
    mi.normalize_curve([1.0], 'zscore')
  with pytest.raises(ValueError, match='one I'):
    mi.select_teacher([1, 2], [1.0], [1.0, 2.0])
  with pytest.raises(ValueError, match='fit_features'):
    mi.estimate_stacked(f[None], np.arange(5) % 2, 2, 'variational')


def _labels_and_clusters(n, k, d, scale, rng):
  labels = rng.integers(0, k, n)
  independent = rng.normal(size=(n, d)) * scale
  separable = (rng.normal(size=(k, d)) * 30 * scale)[labels] + rng.normal(size=(n, d)) * scale
  return labels, independent, separable


@pytest.mark.parametrize('scale', [0.01, 1.0, 100.0])
@pytest.mark.parametrize('d', [2, 8, 64, 512])
def test_kde_default_noise_follows_the_feature_scale(scale, d):
  """Label-independent features give I(Y;F) ≈ 0 and class clusters 30σ apart give ≈ ln K at any
  scale and dimension. Tolerances (K = 10, N = 500): ≤ 0.12·ln K for independence (the positive
  bias of the bound, largest in 2-d: measured 0.10·ln K) and ≥ 0.97·ln K for separable clusters."""
  rng = np.random.default_rng(d)
  labels, independent, separable = _labels_and_clusters(500, 10, d, scale, rng)
  ln_k = math.log(10)
  assert mi.estimate(independent, labels, method='kde', num_classes=10)['I_YF'] <= 0.12 * ln_k
  assert mi.estimate(separable, labels, method='kde', num_classes=10)['I_YF'] >= 0.97 * ln_k


@pytest.mark.parametrize('scale', [1.0, 10.0, 1000.0])
def test_kde_never_exceeds_ln_n(scale):
  """Large-norm features once exceeded ln N by 6.6e-4 through float error on the diagonal."""
  f = np.random.default_rng(3).normal(size=(400, 32)).astype(np.float32) * scale
  for noise in ('auto', 0.1):
    got = mi.estimate(f, np.arange(400) % 4, method='kde', num_classes=4, noise_variance=noise)
    assert got['I_XF'] <= np.float32(math.log(400))


def test_saturation_and_ties_are_diagnosed():
  ln_n, h_y = math.log(100), math.log(10)
  assert (
    mi.diagnose([1, 2, 3], [1.0, 2.0, 3.0], [0.5, 1.0, 2.0], [0.0, 1.0, 2.0], 'kde', 100, h_y) == []
  )
  saturated = mi.diagnose([1, 2], [ln_n, 0.99 * ln_n], [h_y, h_y], [0.0, 0.0], 'kde', 100, h_y)
  assert [w.split(' is ')[0] for w in saturated] == ['I(X;F)', 'I(Y;F)', 'the top score']
  assert 'tied between epochs [1, 2]' in saturated[2] and 'epoch 1, is T*' in saturated[2]
  # the decoder bound of 'variational' has no ln N ceiling
  assert not any(
    'I(X;F)' in w
    for w in mi.diagnose([1, 2], [ln_n, ln_n], [0.1, 0.2], [0.0, 1.0], 'variational', 100, h_y)
  )
  assert mi.label_entropy([0, 1, 1, 1]) == pytest.approx(
    -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
  )


def test_repeats_are_one_compiled_program_and_their_spread_shrinks_with_more_samples(monkeypatch):
  """R repeats × S snapshots: one trace. The std over half-samples estimates the sampling error,
  so it falls as N grows (here ×10 samples: expected ≈ √10 smaller; asserted: at least 2×)."""
  rng = np.random.default_rng(7)
  spreads = []
  for n in (200, 2000):
    labels = rng.integers(0, 4, n)
    features = np.stack([np.eye(4)[labels] * s + rng.normal(size=(n, 4)) for s in (0.5, 1.0)])
    estimation._stacked_program.clear_cache()
    chex.clear_trace_counter()
    monkeypatch.setattr(estimation, 'kde_mi', chex.assert_max_traces(kde_mi_unpatched, n=1))
    out = mi.estimate_stacked(features, labels, 4, 'kde', repeats=6)
    chex.assert_shape([out['I_XF'], out['I_YF']], (6, 2))
    assert np.all(out['I_YF'][:, 1] > out['I_YF'][:, 0])  # more informative snapshot, every repeat
    spreads.append(out['I_YF'].std(0))
  assert np.all(spreads[1] * 2 < spreads[0]), spreads


def test_one_repeat_is_the_estimate_on_all_samples():
  rng = np.random.default_rng(8)
  labels = rng.integers(0, 3, 300)
  features = rng.normal(size=(2, 300, 5)) + np.eye(3, 5)[labels]
  single = mi.estimate_stacked(features, labels, 3, 'kde')
  index, seeds = mi.repeat_plan(300)
  assert index.shape == (1, 300) and list(seeds) == [0]
  again = mi.estimate_stacked(features, labels, 3, 'kde', repeats=2, subsample=1.0)
  # 1e-5: another compiled program (vmapped twice) may order its float sums differently.
  chex.assert_trees_all_close(again['I_YF'], np.stack([single['I_YF']] * 2), rtol=1e-5)
  with pytest.raises(ValueError, match='repeats must be >= 2'):
    mi.repeat_plan(300, repeats=1)


def test_stability_in_plain_words():
  assert mi.stability_sentence(4, [4, 4, 4]) == 'epoch 4 chosen in 3 of 3 repeats: T* is stable'
  assert mi.stability_sentence(100, [100, 80, 100, 120, 100]) == (
    'epoch 100 chosen in 3 of 5 repeats; the repeats also chose epochs [80, 120]: within the '
    "estimator's noise, epochs [80, 100, 120] are indistinguishable"
  )
  stable = mi.stability([1, 2], np.array([[0.0, 1.0], [1.0, 0.0]]), np.zeros((2, 2)))
  assert stable == {'chosen_epochs': [2, 1], 'counts': {1: 1, 2: 1}}


def test_methods_parse_in_order_and_all_means_every_estimator():
  assert mi.parse_methods('kde') == ('kde',)
  assert mi.parse_methods('binning, kde') == ('binning', 'kde')
  assert mi.parse_methods('all') == mi.METHODS
  with pytest.raises(ValueError, match='Unknown select.method'):
    mi.parse_methods('kde,mine')
  with pytest.raises(ValueError, match='twice'):
    mi.parse_methods('kde,kde')


def _spearman_reference(a, b):
  """Pearson's r of the ranks (no ties), written out in numpy."""
  ra, rb = (np.argsort(np.argsort(v)).astype(float) for v in (a, b))
  ra, rb = ra - ra.mean(), rb - rb.mean()
  return float(ra @ rb / np.sqrt((ra @ ra) * (rb @ rb)))


def test_spearman_equals_scipys_with_ties():
  import scipy.stats

  from ckd_jax.ranks import average_ranks, spearman

  rng = np.random.default_rng(3)
  for _ in range(20):
    a, b = rng.integers(0, 4, 9).astype(float), rng.normal(size=9)  # many ties in a
    if np.ptp(a) == 0:
      continue
    np.testing.assert_allclose(average_ranks(a), scipy.stats.rankdata(a))
    assert spearman(a, b) == pytest.approx(scipy.stats.spearmanr(a, b).statistic, abs=1e-12)


def test_rank_correlation_of_curves():
  rng = np.random.default_rng(0)
  a, b = rng.normal(size=7), rng.normal(size=7)
  assert mi.rank_correlation(a, b) == pytest.approx(_spearman_reference(a, b), abs=1e-12)
  assert mi.rank_correlation(a, 3 * a + 1) == pytest.approx(1.0)
  assert mi.rank_correlation(a, -np.exp(a)) == pytest.approx(-1.0)  # monotone: ranks only
  assert mi.rank_correlation(a, np.ones(7)) is None  # a flat curve orders nothing
  assert mi.rank_correlation(a[:2], b[:2]) is None


def test_estimators_that_disagree_on_t_star_are_reported():
  def selection(scores, chosen):
    return {
      'chosen_epoch': chosen,
      'snapshots': [{'I_XF': s, 'I_YF': 2 * s, 'score': s} for s in scores],
    }

  result = mi.compare_estimators(
    {
      'kde': selection([0.0, 1.0, 2.0], 30),
      'binning': selection([2.0, 1.0, 0.0], 10),
      'variational': selection([0.0, 1.0, 2.0], 30),
    }
  )
  assert result['decides'] == 'kde' and result['methods'] == ['kde', 'binning', 'variational']
  assert [p['estimators'] for p in result['rank_correlation']] == [
    ['kde', 'binning'],
    ['kde', 'variational'],
    ['binning', 'variational'],
  ]
  assert [p['score'] for p in result['rank_correlation']] == pytest.approx([-1.0, 1.0, -1.0])
  assert result['warnings'] == [
    'the estimators disagree on T*: kde chose epoch 30, binning chose '
    'epoch 10, variational chose epoch 30; T* follows kde, the first '
    'in select.method'
  ]
  agreeing = mi.compare_estimators(
    {'kde': selection([0.0, 1.0, 2.0], 30), 'variational': selection([0.0, 1.0, 3.0], 30)}
  )
  assert agreeing['warnings'] == []


def _images_from_patches(patches, image_shape):
  """The inverse of `infopro.image_patches`, written as a loop over map locations."""
  n, h, w, _ = patches.shape
  height, width, channels = image_shape
  ph, pw = height // h, width // w
  images = np.zeros((n, height, width, channels), patches.dtype)
  for i in range(h):
    for j in range(w):
      images[:, i * ph : (i + 1) * ph, j * pw : (j + 1) * pw] = patches[:, i, j].reshape(
        n, ph, pw, channels
      )
  return images


def test_image_patches_cut_the_block_under_each_map_location():
  rng = np.random.default_rng(11)
  patches = rng.random((3, 2, 4, 4 * 2 * 3)).astype(np.float32)
  images = _images_from_patches(patches, (8, 8, 3))
  np.testing.assert_array_equal(
    np.asarray(infopro.image_patches(jnp.asarray(images), (2, 4))), patches
  )
  with pytest.raises(ValueError, match='does not tile'):
    infopro.image_patches(jnp.zeros((1, 8, 8, 1)), (3, 3))


def _spatial_case(rng, n, scale):
  """Maps whose every location holds a latent that sets its image patch, maps of noise, labels
  that a map's mean over locations separates, images in [0, 1]."""
  labels = rng.integers(0, 4, n)
  latent = rng.normal(size=(n, 2, 2, 6)) + 2.0 * np.eye(4, 6)[labels][:, None, None]
  patches = 1 / (1 + np.exp(-(latent @ rng.normal(size=(6, 16 * 3)))))
  images = _images_from_patches(patches.astype(np.float32), (8, 8, 3))
  noise = rng.normal(size=latent.shape)
  return np.stack([latent, noise]).astype(np.float32) * scale, labels, images


def test_infopro_sees_input_and_label_information_only_where_there_is_some():
  """Informative maps: I(X;F) well above 0 and I(Y;F) near H(Y) = ln 4; maps of noise: both
  ≈ 0 (the decoder starts at the mean image, the probe at the prior). The same at scales 0.01
  and 100 of the maps (they are standardised)."""
  maps, labels, images = _spatial_case(np.random.default_rng(12), 1600, 1.0)
  scales = np.asarray([0.01, 100.0], np.float32)[:, None, None, None, None, None]
  maps = (maps[None] * scales).reshape((4,) + maps.shape[1:])  # small (2), then large (2)
  got = mi.estimate_stacked(
    maps[:, 800:],
    labels[800:],
    4,
    'infopro',
    images=images[800:],
    fit_features=maps[:, :800],
    fit_labels=labels[:800],
    fit_images=images[:800],
    probe=dict(steps=300),
    decoder=dict(steps=400, learning_rate=3e-3),
  )
  small, large = ({k: v[:2] for k, v in got.items()}, {k: v[2:] for k, v in got.items()})
  (x_informative, x_noise), (y_informative, y_noise) = small['I_XF'], small['I_YF']
  assert x_informative > 20 and abs(x_noise) < 0.05 * x_informative, got
  assert y_informative > 0.8 * np.log(4) and -0.02 < y_noise < 0.05 * np.log(4), got
  # 1e-3: the standardisation's +1e-6 and float32 rounding differ between the two scales.
  chex.assert_trees_all_close(large, small, rtol=1e-3, atol=1e-3)


def test_infopro_needs_maps_and_images():
  maps = np.zeros((1, 20, 2, 2, 3), np.float32)
  labels = np.arange(20) % 2
  with pytest.raises(ValueError, match='spatial maps'):
    mi.estimate_stacked(
      maps[:, :, 0, 0],
      labels,
      2,
      'infopro',
      images=np.zeros((20, 4, 4, 1)),
      fit_features=maps[:, :, 0, 0],
      fit_labels=labels,
      fit_images=np.zeros((20, 4, 4, 1)),
    )
  with pytest.raises(ValueError, match='images='):
    mi.estimate_stacked(maps, labels, 2, 'infopro', fit_features=maps, fit_labels=labels)


def test_infopro_over_snapshots_and_repeats_is_one_compiled_program(monkeypatch):
  maps, labels, images = _spatial_case(np.random.default_rng(13), 400, 1.0)
  maps = np.concatenate([maps, maps[:1] * 0.5])  # 3 snapshots
  estimation._stacked_program.clear_cache()
  chex.clear_trace_counter()
  monkeypatch.setattr(estimation, 'infopro_mi', chex.assert_max_traces(infopro.infopro_mi, n=1))
  out = mi.estimate_stacked(
    maps[:, 200:],
    labels[200:],
    4,
    'infopro',
    images=images[200:],
    fit_features=maps[:, :200],
    fit_labels=labels[:200],
    fit_images=images[:200],
    repeats=2,
    probe=dict(steps=20),
    decoder=dict(steps=20),
  )
  chex.assert_shape([out['I_XF'], out['I_YF']], (2, 3))
