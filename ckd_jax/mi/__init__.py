"""Mutual information between inputs, labels and a teacher's features, over many snapshots at once.

    mi.estimate(features, labels, images=None, method='kde', **settings)           # one snapshot
    mi.estimate_over_snapshots(stacked_variables, model, dataset, method=..., ...)  # all at once
    mi.compare_over_snapshots(stacked_variables, model, dataset, {method: settings, ...})
    mi.select_teacher(epochs, i_xf, i_yf)                                         # Algorithm 1

The paper never published its estimator; four are offered, all in nats: 'variational' (probe and
decoder bounds on the pooled feature), 'infopro' (InfoPro's decoder from the spatial feature map,
with a binary cross-entropy), 'kde' (the pairwise-distance Gaussian-noise bound of
Kolchinsky & Tracey used by Saxe et al.) and 'binning' (Shwartz-Ziv & Tishby). Every estimator is
written for one snapshot and `vmap`ped over the snapshot axis inside one jitted program.
"""

from ckd_jax.mi.binning import binning_mi
from ckd_jax.mi.estimation import (
  FITTED,
  METHODS,
  SPLITS,
  StackedEstimator,
  check_method,
  compare_over_snapshots,
  estimate,
  estimate_over_snapshots,
  estimate_stacked,
  feature_of,
  parse_methods,
  repeat_plan,
  selection_labels,
  selection_samples,
)
from ckd_jax.mi.features import FEATURES, extract_features
from ckd_jax.mi.infopro import infopro_mi
from ckd_jax.mi.kde import kde_mi
from ckd_jax.mi.selection import (
  NORMALIZATIONS,
  compare_estimators,
  diagnose,
  label_entropy,
  normalization_of,
  normalize_curve,
  rank_correlation,
  select_teacher,
  stability,
  stability_sentence,
)
from ckd_jax.mi.variational import variational_mi

__all__ = [
  'METHODS',
  'FITTED',
  'SPLITS',
  'selection_samples',
  'selection_labels',
  'FEATURES',
  'NORMALIZATIONS',
  'check_method',
  'parse_methods',
  'estimate',
  'feature_of',
  'estimate_stacked',
  'estimate_over_snapshots',
  'compare_over_snapshots',
  'StackedEstimator',
  'repeat_plan',
  'extract_features',
  'select_teacher',
  'normalize_curve',
  'normalization_of',
  'stability',
  'stability_sentence',
  'diagnose',
  'label_entropy',
  'rank_correlation',
  'compare_estimators',
  'kde_mi',
  'binning_mi',
  'variational_mi',
  'infopro_mi',
]
