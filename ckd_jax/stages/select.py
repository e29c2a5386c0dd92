"""The select stage (Algorithm 1, steps 2-3): MI of every snapshot of teacher seed 0, then T*.

Writes `selection/mi.json` (per snapshot: epoch, teacher test accuracy, raw and normalised I(X;F)
and I(Y;F), score; the chosen epoch; the estimator and its settings) and `selection/mi.png`. With
several estimators (`select.method='kde,binning'` or 'all') the first decides T* and fills those
fields; `estimators` holds every one's selection and `comparison` their T* and rank correlations.
"""

import json

import numpy as np
from absl import logging

from ckd_jax import mi
from ckd_jax.checkpoints import SnapshotStore, restore_snapshots, snapshot_digests
from ckd_jax.data import load_dataset
from ckd_jax.distributed import primary_only
from ckd_jax.models import get_model
from ckd_jax.stages import console
from ckd_jax.workdir.files import DamagedFileError, read_json, write_json
from ckd_jax.workdir.layout import RunFiles, selection_path, selection_plot_path, teacher_run_dir

# The data settings that decide which images the estimators see (not where the files are kept, nor
# how training augments or batches them).
_DATA_INPUTS = ('source', 'name', 'root', 'image_size', 'train_examples', 'test_examples')


def selection_inputs(config, teacher_run_dir):
  """What a selection is computed from: the digest of every configured snapshot of the finished
  teacher run, the data settings that pick its images, and the select settings. A selection whose
  recorded inputs differ is stale.

  Raises ValueError, before any compute, when the teacher run is unfinished or lacks a snapshot.
  """
  epochs = list(config.teacher.snapshot_epochs)
  if not RunFiles(teacher_run_dir).is_finished():
    raise ValueError(
      f'the select stage needs the finished teacher run {teacher_run_dir} (no '
      'final.json yet): run the teacher stage first'
    )
  missing = [e for e in epochs if e not in SnapshotStore(teacher_run_dir).epochs()]
  if missing:
    raise ValueError(
      f'the select stage needs the snapshots of epochs {missing} in '
      f'{teacher_run_dir}, which are missing: rerun the teacher stage, which '
      'recreates them'
    )
  return {
    'snapshot_digests': snapshot_digests([(teacher_run_dir, e) for e in epochs]),
    'data': {k: config.data[k] for k in _DATA_INPUTS},
    'select': json.loads(config.select.to_json()),
  }


def run_selection(config, dataset, teacher_run_dir, inputs):
  """Estimates MI over the configured snapshots with every estimator of `select.method` (on the
  same features) and picks T* by the first; returns the mi.json dict, which records `inputs`
  (from `selection_inputs`)."""
  select_config = config.select
  store = SnapshotStore(teacher_run_dir)
  epochs = list(config.teacher.snapshot_epochs)
  for epoch in epochs:
    store.check_fits(epoch, config.teacher.arch, dataset.num_classes, 'the select stage')
  stacked, metadata = restore_snapshots(teacher_run_dir, epochs)
  model = get_model(config.teacher.arch, dataset.num_classes)
  methods = {m: select_config[m].to_dict() for m in mi.parse_methods(select_config.method)}
  repeats = None if select_config.repeats == 1 else select_config.repeats
  curves = mi.compare_over_snapshots(
    stacked,
    model,
    dataset,
    methods,
    feature=select_config.feature,
    num_samples=select_config.num_samples,
    fit_samples=select_config.fit_samples,
    batch_size=select_config.batch_size,
    repeats=repeats,
    subsample=select_config.subsample,
    split=select_config.split,
  )
  eval_labels = _evaluation_labels(dataset, select_config)
  results = {
    m: _one_estimator(config, m, curves[m], epochs, metadata, eval_labels) for m in methods
  }
  result = dict(
    results[next(iter(methods))],
    teacher_run=str(teacher_run_dir),
    inputs=inputs,
    units='nats',
    normalization=select_config.normalization,
    weights=list(select_config.weights),
    label_entropy=mi.label_entropy(eval_labels),
  )
  if len(methods) > 1:
    comparison = mi.compare_estimators(results)
    result.update(
      estimators=results,
      comparison=comparison,
      warnings=[f'{m}: {w}' for m, r in results.items() for w in r['warnings']]
      + comparison['warnings'],
    )
  weak = weak_teacher_warning(result)
  if weak:
    result['warnings'] = result['warnings'] + [weak]
  test_split = dataset.test.fingerprint()
  if any(m.get('test_split') != test_split for m in metadata):
    result['warnings'] = result['warnings'] + [
      'the teacher accuracies shown were measured when the snapshots were saved, not on the test '
      'split that the MI is estimated on (the data config changed since, or the snapshots did not '
      'record their split)'
    ]
  return result


# T* this many points of test accuracy below the final snapshot is a choice worth checking.
WEAK_TEACHER_POINTS = 5.0


def weak_teacher_warning(result):
  """A warning when T*'s own test accuracy is more than WEAK_TEACHER_POINTS below the final
  snapshot's and every repeat agrees on it (a choice that looks certain), else None.

  The accuracies were recorded when the snapshots were saved; they are shown for judgement and
  the choice itself never used them. In the studies of EXPERIMENTS.md such choices taught
  students far worse than the final snapshot did (its regret table), so the user is told.
  """
  snapshots = result['snapshots']
  chosen = next(s for s in snapshots if s['epoch'] == result['chosen_epoch'])
  final = max(snapshots, key=lambda s: s['epoch'])
  gap = 100 * (final['teacher_test_accuracy'] - chosen['teacher_test_accuracy'])
  if (
    chosen is final
    or gap <= WEAK_TEACHER_POINTS
    or set(result['repeats']['chosen_epochs']) != {result['chosen_epoch']}
  ):
    return None
  return (
    f'T* (epoch {chosen["epoch"]}) is a teacher {gap:.1f} points of test accuracy below the '
    f'final snapshot (epoch {final["epoch"]}), and every repeat chose it: in the studies of '
    'EXPERIMENTS.md such choices taught students far worse than the final snapshot did (see '
    "its regret table); distill from 'final' as well before trusting T* (the accuracies are "
    'shown for judgement; the choice did not use them)'
  )


def _evaluation_labels(dataset, select_config):
  return mi.selection_labels(
    dataset, select_config.split, select_config.num_samples, select_config.fit_samples
  )


def describe_samples(select_config, count):
  """'359 held-out training images' / '359 test images': what the estimate was evaluated on."""
  return f'{count} ' + (
    'held-out training images' if select_config.split == 'train' else 'test images'
  )


def _clamped_below_zero(curves, method):
  """Lower bounds below 0 are no estimates: clamped to 0 for the score, with one warning per
  curve naming the epochs (the raw means stay in mi.json as `<curve>_raw`)."""
  clamped, warnings = {}, []
  for key, name, what in (
    ('I_XF', 'I(X;F)', 'the decoder reconstructs held-out images worse than the mean image'),
    ('I_YF', 'I(Y;F)', 'the probe predicts held-out labels no better than the label prior'),
  ):
    if key not in curves or method not in mi.FITTED:
      continue
    below = curves[key].mean(0) < 0
    if below.any():
      clamped[key] = below
      warnings.append(
        f'{name} is below zero (a lower bound, so no estimate) at {int(below.sum())} '
        f'snapshot(s): {what}; clamped to 0 for the score'
      )
  return clamped, warnings


def _one_estimator(config, method, curves, epochs, metadata, eval_labels):
  """One estimator's selection: per-snapshot mean ± std over the repeats, T*, its stability and
  the warnings (saturation, ties, instability)."""
  select_config = config.select
  curves = {k: np.atleast_2d(v) for k, v in curves.items()}  # (repeats, snapshots)
  if not all(np.all(np.isfinite(curves[k])) for k in ('I_XF', 'I_YF')):
    raise FloatingPointError(f'the {method} estimator returned non-finite MI: {curves}')
  clamped, clamp_warnings = _clamped_below_zero(curves, method)
  raw = {k: curves[k].mean(0) for k in ('I_XF', 'I_YF')}
  curves = {k: np.maximum(v, 0.0) if k in clamped else v for k, v in curves.items()}
  i_xf, i_yf = curves['I_XF'].mean(0), curves['I_YF'].mean(0)
  rule = (select_config.normalization, tuple(select_config.weights))
  chosen = mi.select_teacher(epochs, i_xf, i_yf, *rule)
  agreement = mi.stability(epochs, curves['I_XF'], curves['I_YF'], *rule)
  snapshots = []
  for i, (epoch, meta) in enumerate(zip(epochs, metadata)):
    snapshot = {
      'epoch': epoch,
      'teacher_test_accuracy': meta['test_accuracy'],
      'score': chosen['score'][i],
      'chosen_in_repeats': agreement['counts'].get(epoch, 0),
    }
    for key, mean in (('I_XF', i_xf), ('I_YF', i_yf)):
      _, scale = mi.normalization_of(mean, select_config.normalization)
      std = float(curves[key][:, i].std())
      snapshot.update(
        {
          key: float(mean[i]),
          f'{key}_std': std,
          f'{key}_normalized': chosen[f'{key}_normalized'][i],
          f'{key}_normalized_std': std * scale,
        }
      )
      if key in clamped and clamped[key][i]:
        snapshot[f'{key}_raw'] = float(raw[key][i])
    if 'noise_variance' in curves:  # kde: the σ² the estimate used (mean over repeats)
      snapshot['noise_variance'] = float(curves['noise_variance'][:, i].mean())
    snapshots.append(snapshot)
  repeats = None if select_config.repeats == 1 else select_config.repeats
  per_estimate = mi.repeat_plan(len(eval_labels), repeats, subsample=select_config.subsample)[
    0
  ].shape[1]
  warnings = clamp_warnings + mi.diagnose(
    epochs, i_xf, i_yf, chosen['score'], method, per_estimate, mi.label_entropy(eval_labels)
  )
  stability = mi.stability_sentence(chosen['chosen_epoch'], agreement['chosen_epochs'])
  if select_config.repeats > 1 and set(agreement['chosen_epochs']) != {chosen['chosen_epoch']}:
    warnings.append(f'T* is not stable: {stability}')
  return {
    'chosen_epoch': chosen['chosen_epoch'],
    'snapshots': snapshots,
    'warnings': warnings,
    'repeats': {
      'count': select_config.repeats,
      'subsample': select_config.subsample if repeats else 1.0,
      'chosen_epochs': agreement['chosen_epochs'],
      'stability': stability,
    },
    'estimator': {
      'method': method,
      'feature': mi.feature_of(method, select_config.feature),
      'settings': select_config[method].to_dict(),
      'split': select_config.split,
      'num_samples': len(eval_labels),
      'fit_samples': select_config.fit_samples if method in mi.FITTED else 0,
    },
  }


def plot_selection(result, path):
  """Normalised I(X;F), I(Y;F), their weighted sum and the teacher's accuracy against epoch; with
  several estimators, a second panel with each one's score and T*."""
  import matplotlib

  matplotlib.use('Agg')
  import matplotlib.pyplot as plt

  others = result.get('estimators')
  fig, axes = plt.subplots(1, 2 if others else 1, figsize=(13 if others else 7, 4.2), squeeze=False)
  ax = axes[0, 0]
  snaps = result['snapshots']
  epochs = [s['epoch'] for s in snaps]
  for key, marker, name in (('I_XF', 'o-', 'I(X;F)'), ('I_YF', 's-', 'I(Y;F)')):
    ax.errorbar(
      epochs,
      [s[f'{key}_normalized'] for s in snaps],
      capsize=3,
      fmt=marker,
      yerr=[s.get(f'{key}_normalized_std', 0.0) for s in snaps],
      label=f'{name}, normalised (± std over repeats)',
    )
  ax.plot(epochs, [s['score'] for s in snaps], 'k--', alpha=0.6, label='score (weighted sum)')
  ax.axvline(
    result['chosen_epoch'],
    color='tab:red',
    alpha=0.4,
    lw=6,
    label=f'T* = epoch {result["chosen_epoch"]} (chosen in '
    f'{result["repeats"]["chosen_epochs"].count(result["chosen_epoch"])} of '
    f'{result["repeats"]["count"]} repeats)',
  )
  ax.set_xlabel('teacher epoch')
  ax.set_ylabel(f'normalised MI ({result["normalization"]})')
  acc = ax.twinx()
  acc.plot(
    epochs,
    [100 * s['teacher_test_accuracy'] for s in snaps],
    '^:',
    color='tab:green',
    label='teacher test accuracy',
  )
  acc.set_ylabel('teacher test accuracy (%)', color='tab:green')
  lines = ax.get_legend_handles_labels()
  more = acc.get_legend_handles_labels()
  ax.legend(lines[0] + more[0], lines[1] + more[1], loc='lower right', fontsize=8)
  ax.set_title(f'MI over snapshots ({result["estimator"]["method"]} estimator)')
  if others:
    ax = axes[0, 1]
    for method in result['comparison']['methods']:
      selection = others[method]
      (line,) = ax.plot(epochs, [s['score'] for s in selection['snapshots']], 'o-', label=method)
      ax.axvline(selection['chosen_epoch'], color=line.get_color(), alpha=0.5, ls=':')
    ax.set_xlabel("teacher epoch (dotted: each estimator's T*)")
    ax.set_ylabel('score (weighted sum of normalised MI)')
    ax.set_title(f'Estimators compared (T* follows {result["comparison"]["decides"]})')
    ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


@primary_only
def write_selection(result, workdir):
  path = selection_path(workdir)
  path.parent.mkdir(parents=True, exist_ok=True)
  plot_selection(result, selection_plot_path(workdir))
  write_json(path, result)


def _recorded_and_current_inputs(config, workdir, recompute_if_damaged=False):
  teacher = teacher_run_dir(workdir, config.teacher.arch, config.seed)
  path = selection_path(workdir)
  recorded = None
  if path.exists():
    try:
      recorded = read_json(path, _REDO_SELECTION).get('inputs')
    except DamagedFileError:
      if not recompute_if_damaged:
        raise
      print(f'selection {path} is damaged: recomputing it')
  return recorded, selection_inputs(config, teacher), teacher


_REDO_SELECTION = 'rerun the select stage (add it to --config.stages), which recomputes it'


def check_current(config, workdir):
  """Refuses to use a selection that its snapshots or settings have outdated (for the distill
  stage's 'selected' when the select stage is not run in the same command)."""
  recorded, current, _ = _recorded_and_current_inputs(config, workdir)
  if recorded != current:
    raise ValueError(
      f'{selection_path(workdir)} is stale (its snapshots or select settings changed '
      "since it was computed), so 'selected' cannot use it: run the select stage "
      'first (add it to --config.stages)'
    )


def run(config, workdir):
  """Estimates MI over the snapshots of teacher seed config.seed and picks T*; a selection is
  recomputed only when its snapshots or settings changed."""
  path = selection_path(workdir)
  recorded, current, teacher = _recorded_and_current_inputs(
    config, workdir, recompute_if_damaged=True
  )
  if recorded == current:
    logging.info('selection %s is current; skipping', path)
    result = read_json(path)
  else:
    if recorded is not None:
      print(f'selection {path} is stale (its snapshots or settings changed): recomputing it')
    dataset, select_config = load_dataset(config.data), config.select
    # One compiled program per estimator, with no progress to show: say what it does before.
    methods = ', '.join(mi.parse_methods(select_config.method))
    samples = describe_samples(select_config, len(_evaluation_labels(dataset, select_config)))
    print(
      f'select: {methods} MI over the snapshots of epochs {list(config.teacher.snapshot_epochs)} '
      f'of {teacher} on {samples}, {select_config.repeats} repeat(s)'
    )
    result = run_selection(config, dataset, teacher, current)
    write_selection(result, workdir)  # (process 0 only: the others go on with `result`)
  print(console.selection_table(result))
  if 'comparison' in result:
    print(console.estimators_table(result))
  for warning in result['warnings']:
    print(f'warning: {warning}')
  print(
    f'selected T* = epoch {result["chosen_epoch"]} ({result["repeats"]["stability"]}): {path} '
    'and mi.png'
  )
