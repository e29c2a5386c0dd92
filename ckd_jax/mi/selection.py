"""Algorithm 1's choice: normalise I(X;F) and I(Y;F) across snapshots, T* = argmax of their sum."""
import numpy as np

NORMALIZATIONS = ('minmax', 'max', 'none')


def normalize_curve(values, mode='minmax'):
  """minmax: to [0, 1] across snapshots (a flat curve → zeros); max: divide by max |v|; none."""
  values = np.asarray(values, np.float64)
  if mode not in NORMALIZATIONS:
    raise ValueError(f'normalization must be one of {NORMALIZATIONS}, got {mode!r}')
  if mode == 'none':
    return values
  if mode == 'max':
    scale = np.max(np.abs(values))
    return values / scale if scale > 0 else np.zeros_like(values)
  span = values.max() - values.min()
  return (values - values.min()) / span if span > 0 else np.zeros_like(values)


def select_teacher(epochs, i_xf, i_yf, normalization='minmax', weights=(1.0, 1.0)):
  """Returns the normalised curves, the scores and the chosen epoch (ties: the earliest)."""
  if len(epochs) != len(i_xf) or len(epochs) != len(i_yf) or not epochs:
    raise ValueError('need one I(X;F) and one I(Y;F) value per snapshot epoch')
  x_norm = normalize_curve(i_xf, normalization)
  y_norm = normalize_curve(i_yf, normalization)
  scores = weights[0] * x_norm + weights[1] * y_norm
  best = int(np.argmax(scores))
  return {'I_XF_normalized': x_norm.tolist(), 'I_YF_normalized': y_norm.tolist(),
          'score': scores.tolist(), 'chosen_epoch': int(epochs[best])}
