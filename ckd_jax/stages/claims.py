"""The paper's four claims, checked against a finished study's own numbers (a report section).

Every comparison is of means over seeds with its standard error, SE = sqrt(s1²/n1 + s2²/n2), and
reads "inside the noise" unless the difference exceeds 2 SE: a rule of thumb for 3 seeds a side,
not a significance test. Like the rest of the report this reads files only and imports no JAX.
"""

import math
import statistics

from ckd_jax.ranks import spearman

NOISE_SES = 2.0


def _stats(values):
  """(mean, std, n) of accuracies in [0, 1]."""
  spread = statistics.stdev(values) if len(values) > 1 else 0.0
  return statistics.mean(values), spread, len(values)


def compare(a, b):
  """a − b in accuracy points with its SE and a verdict: 'higher', 'lower' or 'inside the noise'."""
  (mean_a, std_a, n_a), (mean_b, std_b, n_b) = _stats(a), _stats(b)
  diff = mean_a - mean_b
  se = math.sqrt(std_a**2 / n_a + std_b**2 / n_b)
  if n_a < 2 or n_b < 2:
    verdict = 'untested (one seed: no noise estimate)'
  elif abs(diff) <= NOISE_SES * se:
    verdict = 'inside the noise'
  else:
    verdict = 'higher' if diff > 0 else 'lower'
  return dict(diff=diff, se=se, verdict=verdict)


def _points(comparison):
  return (
    f'{100 * comparison["diff"]:+.2f} ± {100 * comparison["se"]:.2f} points '
    f'({comparison["verdict"]})'
  )


def single_snapshot_choices(summary, teacher_epochs, chosen_epoch=None):
  """{epoch: choice} of the student groups taught by one snapshot of teacher seed 0."""
  epochs = {}
  for choice in summary:
    if choice.startswith('epoch:'):
      epochs[int(choice.split(':')[1])] = choice
    elif choice == 'final':
      epochs[teacher_epochs] = choice
  if chosen_epoch is not None and 'selected' in summary:
    epochs.setdefault(chosen_epoch, 'selected')
  return dict(sorted(epochs.items()))


def claim_intermediate(summary, teacher_epochs):
  """Claim 1: some intermediate snapshot teaches better than the final one."""
  single = single_snapshot_choices(summary, teacher_epochs)
  middle = {e: c for e, c in single.items() if e != teacher_epochs}
  if 'final' not in summary or not middle:
    return None
  best = max(middle.values(), key=lambda c: statistics.mean(summary[c]['last']))
  result = compare(summary[best]['last'], summary['final']['last'])
  return dict(
    best=best,
    **result,
    text=(
      f'Best intermediate teacher `{best}` vs `final`: {_points(result)}. The best of '
      f'{len(middle)} intermediate snapshots is picked after the fact, which favours it.'
    ),
  )


def _estimators(selection):
  """{method: its selection} in select.method's order (the deciding one first)."""
  if 'estimators' not in selection:
    return {selection['estimator']['method']: selection}
  return {m: selection['estimators'][m] for m in selection['comparison']['methods']}


def claim_selected(summary, teacher_epochs, selection):
  """Claim 2: T* teaches as well as the best snapshot in hindsight, under each estimator."""
  if selection is None or 'selected' not in summary:
    return None
  single = single_snapshot_choices(summary, teacher_epochs, selection['chosen_epoch'])
  hindsight = max(single.values(), key=lambda c: statistics.mean(summary[c]['last']))
  lines = []
  for method, result in _estimators(selection).items():
    epoch = result['chosen_epoch']
    choice = single.get(epoch)
    if choice is None:
      lines.append(f'`{method}` chose epoch {epoch}, from which no student was trained.')
    else:
      gap = compare(summary[choice]['last'], summary[hindsight]['last'])
      lines.append(
        f'The T* of `{method}` (epoch {epoch}, `{choice}`) vs the best in hindsight: '
        f'{_points(gap)}.'
      )
  result = compare(summary['selected']['last'], summary[hindsight]['last'])
  return dict(
    hindsight=hindsight,
    **result,
    text=(f'Best single snapshot in hindsight: `{hindsight}`. ' + ' '.join(lines)),
  )


def claim_ensembles(summary, teacher_rows):
  """Claim 3: a snapshot ensemble teaches as well as a full ensemble, for one run's cost."""
  snapshot = [c for c in summary if c.startswith('snapshot_ensemble')]
  full = [c for c in summary if c.startswith('full_ensemble')]
  size = int(full[0].split(':')[1]) if full else 0
  if not snapshot or not full or len(teacher_rows) < size:
    return None
  result = compare(summary[snapshot[0]]['last'], summary[full[0]]['last'])
  one, many = teacher_rows[0]['epochs'], sum(r['epochs'] for r in teacher_rows[:size])
  return dict(
    **result,
    cost_ratio=one / many,
    text=(
      f'`{snapshot[0]}` vs `{full[0]}`: {_points(result)}, for {one} teacher epochs of training '
      f'instead of {many} ({one / many:.2f}×; training times in the ensemble table above).'
    ),
  )


def _trend(values, stds):
  """Whether a curve over snapshots rises to its peak from its lowest point before it, and falls
  from it to its lowest point after it, each by more than 2 SE."""
  peak = max(range(len(values)), key=values.__getitem__)
  beyond_noise = lambda i: (
    values[peak] - values[i] > NOISE_SES * math.sqrt(stds[peak] ** 2 + stds[i] ** 2)
  )
  rises = any(beyond_noise(i) for i in range(peak))
  falls = any(beyond_noise(i) for i in range(peak + 1, len(values)))
  return peak, rises, falls


def claim_information(selection):
  """Claim 4: I(X;F) rises, then falls over training, while I(Y;F) rises (each estimator)."""
  if selection is None:
    return None
  lines = []
  for method, result in _estimators(selection).items():
    snapshots = sorted(result['snapshots'], key=lambda s: s['epoch'])
    epochs = [s['epoch'] for s in snapshots]
    curve = lambda key: ([s[key] for s in snapshots], [s.get(f'{key}_std', 0.0) for s in snapshots])
    peak, rises, falls = _trend(*curve('I_XF'))
    shape = {
      (True, True): 'rises, then falls',
      (True, False): 'rises with no fall beyond the noise',
      (False, True): 'falls with no rise beyond the noise',
      (False, False): 'stays flat within the noise',
    }[(rises, falls)]
    y_values, y_stds = curve('I_YF')
    y_up = y_values[-1] - y_values[0] > NOISE_SES * math.sqrt(y_stds[0] ** 2 + y_stds[-1] ** 2)
    rho = spearman(epochs, y_values)
    warned = (
      f' Read it with its {len(result["warnings"])} warning(s) in the MI section.'
      if result.get('warnings')
      else ''
    )
    lines.append(
      f'`{method}`: I(X;F) {shape}, highest at epoch {epochs[peak]}; I(Y;F) '
      f'{"rises" if y_up else "does not rise beyond the noise"} from epoch {epochs[0]} '
      f'to {epochs[-1]} (Spearman ρ with the epoch '
      f'{"–" if rho is None else f"{rho:+.2f}"}).{warned}'
    )
  return dict(
    text=' '.join(lines) + ' The ± of an estimate is its spread over half-sample '
    'repeats on one teacher seed, not over teacher seeds.'
  )


def section(summary, teacher_rows, teacher_epochs, selection, num_seeds):
  """Report lines: one paragraph per claim, with the numbers it rests on; `num_seeds`: the
  student seeds each choice should have (fewer finished ones are said, not hidden)."""
  claims = (
    (
      '1. An intermediate snapshot teaches better than the final one',
      claim_intermediate(summary, teacher_epochs),
    ),
    (
      '2. The MI-selected T* is as good as the best snapshot in hindsight',
      claim_selected(summary, teacher_epochs, selection),
    ),
    (
      '3. A snapshot ensemble teaches as well as a full ensemble, at a fraction of the cost',
      claim_ensembles(summary, teacher_rows),
    ),
    ('4. I(X;F) rises, then falls over training, while I(Y;F) rises', claim_information(selection)),
  )
  lines = [
    "## The paper's claims on this run",
    '',
    'Student accuracy after the last epoch, difference of means over seeds ± its standard '
    f'error; "inside the noise" unless the difference exceeds {NOISE_SES:g} SE (a rule of '
    'thumb, not a test).',
  ]
  partial = [
    f'`{c}` ({len(e["last"])} of {num_seeds})'
    for c, e in summary.items()
    if len(e['last']) < num_seeds
  ]
  if partial:
    lines += [
      '',
      '**Partial:** fewer finished student seeds than configured for '
      + ', '.join(partial)
      + '; the claims below use the runs that exist.',
    ]
  for title, claim in claims:
    lines += [
      '',
      f'**{title}.** '
      + (claim['text'] if claim else 'Not measured: this run lacks the runs it needs.'),
    ]
  return lines
