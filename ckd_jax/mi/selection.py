"""Algorithm 1's choice: normalise I(X;F) and I(Y;F) across snapshots, T* = argmax of their sum."""

import itertools

import numpy as np

from ckd_jax.ranks import spearman

NORMALIZATIONS = ('minmax', 'max', 'none')


def normalization_of(values, mode='minmax'):
  """(offset, scale) of the affine map v ↦ (v − offset)·scale that `mode` fits to `values`:
  minmax to [0, 1] across snapshots (a flat curve → zeros); max: divide by max |v|; none."""
  values = np.asarray(values, np.float64)
  if mode not in NORMALIZATIONS:
    raise ValueError(f'normalization must be one of {NORMALIZATIONS}, got {mode!r}')
  if mode == 'none':
    return 0.0, 1.0
  if mode == 'max':
    scale = np.max(np.abs(values))
    return 0.0, 1.0 / scale if scale > 0 else 0.0
  span = values.max() - values.min()
  return values.min(), 1.0 / span if span > 0 else 0.0


def normalize_curve(values, mode='minmax'):
  offset, scale = normalization_of(values, mode)
  return (np.asarray(values, np.float64) - offset) * scale


def select_teacher(epochs, i_xf, i_yf, normalization='minmax', weights=(1.0, 1.0)):
  """Algorithm 1's choice: T* maximises weights[0]·norm(I(X;F)) + weights[1]·norm(I(Y;F)).

  Args:
    epochs: the snapshots' epochs; i_xf, i_yf: one value per snapshot (nats).
    normalization: of each curve across snapshots, one of NORMALIZATIONS.
    weights: the two terms' weights.
  Returns:
    {'I_XF_normalized', 'I_YF_normalized', 'score': lists per snapshot, 'chosen_epoch': int};
    a tie goes to the earliest of the tied snapshots.
  """
  if len(epochs) != len(i_xf) or len(epochs) != len(i_yf) or not epochs:
    raise ValueError('need one I(X;F) and one I(Y;F) value per snapshot epoch')
  x_norm = normalize_curve(i_xf, normalization)
  y_norm = normalize_curve(i_yf, normalization)
  scores = weights[0] * x_norm + weights[1] * y_norm
  best = int(np.argmax(scores))
  return {
    'I_XF_normalized': x_norm.tolist(),
    'I_YF_normalized': y_norm.tolist(),
    'score': scores.tolist(),
    'chosen_epoch': int(epochs[best]),
  }


SATURATION = 0.98  # a curve within 2 % of its ceiling at every snapshot says nothing about them


def label_entropy(labels):
  """H(Y) in nats of the empirical label distribution: the ceiling of I(Y;F)."""
  p = np.bincount(np.asarray(labels)) / len(labels)
  p = p[p > 0]
  return float(-np.sum(p * np.log(p)))


def diagnose(epochs, i_xf, i_yf, scores, method, num_samples, h_y):
  """Plain-language warnings about a selection that cannot be trusted (empty: none).

  Saturation: kde and binning cap I(X;F) at ln N, and every estimator's I(Y;F) is capped by H(Y);
  a curve at its cap for every snapshot cannot tell snapshots apart. Ties: T* is the earliest of
  the snapshots with the top score, which then decides nothing.
  """
  warnings = []
  if method in ('kde', 'binning') and np.all(np.asarray(i_xf) >= SATURATION * np.log(num_samples)):
    warnings.append(
      f'I(X;F) is saturated: within {100 * (1 - SATURATION):.0f} % of ln N = '
      f'{np.log(num_samples):.3f} at every snapshot (every sample is alone in its '
      'kernel or bin); the curve carries no information about the snapshots'
    )
  if np.all(np.asarray(i_yf) >= SATURATION * h_y):
    warnings.append(
      f'I(Y;F) is saturated: within {100 * (1 - SATURATION):.0f} % of H(Y) = '
      f'{h_y:.3f} at every snapshot; the curve cannot tell the snapshots apart'
    )
  scores = np.asarray(scores)
  tied = [
    e for e, s in zip(epochs, scores) if s >= scores.max() - 1e-9 * max(1.0, abs(scores.max()))
  ]
  if len(tied) > 1:
    warnings.append(
      f'the top score is tied between epochs {tied}; by the tie rule the earliest, '
      f'epoch {tied[0]}, is T*, which the estimate does not support over the others'
    )
  return warnings


def stability(epochs, i_xf_repeats, i_yf_repeats, normalization='minmax', weights=(1.0, 1.0)):
  """T* of every repeat ((R, S) curves): {'chosen_epochs': [...], 'counts': {epoch: n}}."""
  chosen = [
    select_teacher(epochs, x, y, normalization, weights)['chosen_epoch']
    for x, y in zip(i_xf_repeats, i_yf_repeats)
  ]
  return {'chosen_epochs': chosen, 'counts': {e: chosen.count(e) for e in epochs if e in chosen}}


def stability_sentence(chosen_epoch, chosen_epochs):
  """Plain words on how often the repeats agree with T*."""
  hits, total = chosen_epochs.count(chosen_epoch), len(chosen_epochs)
  others = sorted(set(chosen_epochs) - {chosen_epoch})
  if not others:
    return f'epoch {chosen_epoch} chosen in {hits} of {total} repeats: T* is stable'
  return (
    f'epoch {chosen_epoch} chosen in {hits} of {total} repeats; the repeats also chose epochs '
    f"{others}: within the estimator's noise, epochs {sorted({chosen_epoch, *others})} are "
    'indistinguishable'
  )


CURVES = ('I_XF', 'I_YF', 'score')


def rank_correlation(a, b):
  """Spearman's ρ of two curves over the same snapshots: do they order the snapshots alike?
  None when either curve is flat (it orders nothing) or there are fewer than 3 snapshots."""
  return spearman(a, b)


def compare_estimators(results):
  """How several estimators' selections over the same snapshots agree.

  `results`: {method: a selection with 'chosen_epoch' and per-snapshot I_XF, I_YF, score}, the
  first deciding T*. Returns each one's T*, Spearman's ρ of every pair's curves (see
  `rank_correlation`) and a warning when their T* differ.
  """
  methods = list(results)
  curve = lambda m, key: [s[key] for s in results[m]['snapshots']]
  chosen = {m: results[m]['chosen_epoch'] for m in methods}
  pairs = [
    dict(
      estimators=[a, b], **{key: rank_correlation(curve(a, key), curve(b, key)) for key in CURVES}
    )
    for a, b in itertools.combinations(methods, 2)
  ]
  warnings = []
  if len(set(chosen.values())) > 1:
    warnings.append(
      'the estimators disagree on T*: '
      + ', '.join(f'{m} chose epoch {e}' for m, e in chosen.items())
      + f'; T* follows {methods[0]}, the '
      'first in select.method'
    )
  return {
    'decides': methods[0],
    'methods': methods,
    'chosen_epochs': chosen,
    'rank_correlation': pairs,
    'warnings': warnings,
  }
