"""Spearman's rank correlation in numpy, for the select stage and the report's claims.

Why not scipy.stats.spearmanr: importing scipy.stats costs more than the select and report stages
spend on this one number; this is the same statistic (ties share their average rank; tested against
scipy) and imports nothing but numpy, so the report stays free of JAX and scipy.
"""

import numpy as np


def average_ranks(values):
  """Ranks 1..n, tied values sharing the mean of the ranks they span."""
  values = np.asarray(values, np.float64)
  order = np.argsort(values, kind='stable')
  _, first, counts = np.unique(values[order], return_index=True, return_counts=True)
  tied_mean = first + (counts + 1) / 2.0  # 1-based mean rank of each run of equal values
  ranks = np.empty(len(values))
  ranks[order] = np.repeat(tied_mean, counts)
  return ranks


def spearman(a, b):
  """Spearman's ρ of two equally long sequences; None when either is constant or shorter than 3
  (then it orders nothing)."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
    return None
  ra, rb = average_ranks(a), average_ranks(b)
  ra, rb = ra - ra.mean(), rb - rb.mean()
  return float(ra @ rb / np.sqrt((ra @ ra) * (rb @ rb)))
