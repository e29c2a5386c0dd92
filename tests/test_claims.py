"""The report's verdicts on the paper's claims, against hand-computed means and standard errors."""

import numpy as np
import pytest

from ckd_jax.stages import claims


def _group(values, teacher=0.8):
  return {'teacher': teacher, 'last': list(values), 'best': list(values)}


def test_compare_is_the_difference_of_means_with_its_standard_error():
  a, b = [0.80, 0.82, 0.81], [0.70, 0.74, 0.72]
  result = claims.compare(a, b)
  se = np.sqrt(np.var(a, ddof=1) / 3 + np.var(b, ddof=1) / 3)
  np.testing.assert_allclose([result['diff'], result['se']], [np.mean(a) - np.mean(b), se])
  assert result['verdict'] == 'higher'
  assert claims.compare(b, a)['verdict'] == 'lower'
  # 1 point apart with an SE of 0.82 points: below 2 SE
  assert claims.compare(a, [0.79, 0.81, 0.80])['verdict'] == 'inside the noise'
  assert claims.compare([0.8], [0.7])['verdict'].startswith('untested')


def test_claim_1_compares_the_best_intermediate_snapshot_with_the_final_one():
  summary = {
    'epoch:9': _group([0.70, 0.71, 0.72]),
    'epoch:15': _group([0.80, 0.81, 0.82]),
    'final': _group([0.75, 0.76, 0.77]),
    'none': _group([0.6, 0.6, 0.61], ''),
  }
  result = claims.claim_intermediate(summary, teacher_epochs=30)
  assert result['best'] == 'epoch:15'
  np.testing.assert_allclose(result['diff'], 0.05)
  assert result['verdict'] == 'higher'
  assert claims.claim_intermediate({'final': summary['final']}, 30) is None


def test_claim_2_measures_each_estimators_pick_against_the_best_in_hindsight():
  summary = {
    'epoch:9': _group([0.80, 0.81, 0.82]),
    'final': _group([0.75, 0.76, 0.77]),
    'selected': _group([0.70, 0.71, 0.72]),
  }
  selection = {
    'chosen_epoch': 12,
    'estimator': {'method': 'variational'},
    'comparison': {'methods': ['variational', 'kde', 'binning']},
    'estimators': {
      'binning': {'chosen_epoch': 3},
      'kde': {'chosen_epoch': 9},
      'variational': {'chosen_epoch': 12},
    },
  }
  result = claims.claim_selected(summary, 30, selection)
  assert result['hindsight'] == 'epoch:9'
  np.testing.assert_allclose(result['diff'], -0.10)
  text = result['text']
  assert 'The T* of `kde` (epoch 9, `epoch:9`) vs the best in hindsight: +0.00' in text
  assert 'The T* of `variational` (epoch 12, `selected`) vs the best in hindsight: -10.00' in text
  assert '`binning` chose epoch 3, from which no student was trained' in text
  assert text.index('`variational` (epoch') < text.index('`kde` (epoch')  # the deciding one first


def test_claim_3_compares_the_ensembles_and_their_training_cost():
  summary = {
    'snapshot_ensemble:15,21,30': _group([0.80, 0.81, 0.82]),
    'full_ensemble:3': _group([0.80, 0.82, 0.84]),
  }
  teachers = [{'epochs': 30}, {'epochs': 30}, {'epochs': 30}]
  result = claims.claim_ensembles(summary, teachers)
  np.testing.assert_allclose([result['diff'], result['cost_ratio']], [-0.01, 1 / 3])
  assert result['verdict'] == 'inside the noise'


@pytest.mark.parametrize(
  'i_xf, shape',
  [
    ([1.0, 3.0, 2.0, 1.0], 'rises, then falls, highest at epoch 6'),
    ([1.0, 2.0, 3.0, 4.0], 'rises with no fall beyond the noise, highest at epoch 12'),
    ([4.0, 3.0, 2.0, 1.0], 'falls with no rise beyond the noise, highest at epoch 3'),
    ([1.0, 1.1, 1.0, 1.05], 'stays flat within the noise'),
    ([2.0, 1.0, 2.2, 1.0], 'rises, then falls, highest at epoch 9'),  # from the dip before the peak
  ],
)
def test_claim_4_reads_the_shape_of_the_information_curves(i_xf, shape):
  snapshots = [
    dict(epoch=e, I_XF=x, I_XF_std=0.1, I_YF=y, I_YF_std=0.1)
    for e, x, y in zip((3, 6, 9, 12), i_xf, (0.5, 1.0, 1.5, 2.0))
  ]
  text = claims.claim_information({'estimator': {'method': 'kde'}, 'snapshots': snapshots})['text']
  assert f'`kde`: I(X;F) {shape}' in text
  assert 'I(Y;F) rises from epoch 3 to 12 (Spearman ρ with the epoch +1.00)' in text


def test_fewer_seeds_than_configured_and_estimator_warnings_are_said():
  summary = {'final': _group([0.75, 0.76, 0.77]), 'epoch:9': _group([0.8])}
  text = '\n'.join(claims.section(summary, [], 30, None, num_seeds=3))
  assert '**Partial:** fewer finished student seeds than configured for `epoch:9` (1 of 3)' in text
  snapshots = [dict(epoch=e, I_XF=1.0, I_YF=1.0) for e in (3, 6, 9)]
  selection = {
    'estimator': {'method': 'kde'},
    'snapshots': snapshots,
    'warnings': ['I(X;F) is saturated'],
  }
  assert (
    'Read it with its 1 warning(s) in the MI section' in claims.claim_information(selection)['text']
  )
