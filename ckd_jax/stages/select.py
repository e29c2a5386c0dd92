"""The select stage (Algorithm 1, steps 2-3): MI of every snapshot of teacher seed 0, then T*.

Writes `selection/mi.json` (per snapshot: epoch, teacher test accuracy, raw and normalised I(X;F) and
I(Y;F), score; the chosen epoch; the estimator and its settings) and `selection/mi.png`.
"""
import json

import numpy as np
from absl import logging

from ckd_jax import mi
from ckd_jax.checkpoints import SnapshotStore, restore_snapshots, snapshot_digests
from ckd_jax.data import load_dataset
from ckd_jax.models import get_model
from ckd_jax.stages import report
from ckd_jax.workdir.files import read_json, write_json
from ckd_jax.workdir.layout import RunFiles, selection_path, selection_plot_path, teacher_run_dir


def selection_inputs(config, teacher_run_dir):
  """What a selection is computed from: the digest of every configured snapshot of the finished
  teacher run, and the select settings. A selection whose recorded inputs differ is stale.

  Raises ValueError, before any compute, when the teacher run is unfinished or lacks a snapshot.
  """
  epochs = list(config.teacher.snapshot_epochs)
  if not RunFiles(teacher_run_dir).is_finished():
    raise ValueError(f'the select stage needs the finished teacher run {teacher_run_dir} (no '
                     'final.json yet): run the teacher stage first')
  missing = [e for e in epochs if e not in SnapshotStore(teacher_run_dir).epochs()]
  if missing:
    raise ValueError(f'the select stage needs the snapshots of epochs {missing} in '
                     f'{teacher_run_dir}, which are missing: rerun the teacher stage, which '
                     'recreates them')
  return {'snapshot_digests': snapshot_digests([(teacher_run_dir, e) for e in epochs]),
          'select': json.loads(config.select.to_json())}


def run_selection(config, dataset, teacher_run_dir):
  """Estimates MI over the configured snapshots and picks T*; returns the mi.json dict."""
  sc = config.select
  inputs = selection_inputs(config, teacher_run_dir)
  store = SnapshotStore(teacher_run_dir)
  epochs = list(config.teacher.snapshot_epochs)
  for epoch in epochs:
    store.check_fits(epoch, config.teacher.arch, dataset.num_classes, 'the select stage')
  stacked, metadata = restore_snapshots(teacher_run_dir, epochs)
  model = get_model(config.teacher.arch, dataset.num_classes)
  settings = sc[sc.method].to_dict()
  curves = mi.estimate_over_snapshots(stacked, model, dataset, method=sc.method,
                                      feature=sc.feature, num_samples=sc.num_samples,
                                      fit_samples=sc.fit_samples, batch_size=sc.batch_size,
                                      **settings)
  i_xf, i_yf = curves['I_XF'], curves['I_YF']
  if not (np.all(np.isfinite(i_xf)) and np.all(np.isfinite(i_yf))):
    raise FloatingPointError(f'the {sc.method} estimator returned non-finite MI: {curves}')
  chosen = mi.select_teacher(epochs, i_xf, i_yf, sc.normalization, tuple(sc.weights))
  snapshots = [{'epoch': e, 'teacher_test_accuracy': m['test_accuracy'], 'I_XF': float(x),
                'I_YF': float(y), 'I_XF_normalized': xn, 'I_YF_normalized': yn, 'score': s}
               for e, m, x, y, xn, yn, s in zip(epochs, metadata, i_xf, i_yf,
                                                chosen['I_XF_normalized'],
                                                chosen['I_YF_normalized'], chosen['score'])]
  if 'noise_variance' in curves:  # kde: the σ² each snapshot's estimate used
    for snapshot, variance in zip(snapshots, curves['noise_variance']):
      snapshot['noise_variance'] = float(variance)
  eval_labels = dataset.test.take(sc.num_samples).labels
  h_y = mi.label_entropy(eval_labels)
  return {'teacher_run': str(teacher_run_dir), 'chosen_epoch': chosen['chosen_epoch'],
          'snapshots': snapshots, 'units': 'nats', 'label_entropy': h_y,
          'warnings': mi.diagnose(epochs, i_xf, i_yf, chosen['score'], sc.method,
                                  len(eval_labels), h_y),
          'estimator': {'method': sc.method, 'feature': sc.feature, 'settings': settings,
                        'num_samples': len(eval_labels),
                        'fit_samples': sc.fit_samples if sc.method == 'variational' else 0},
          'normalization': sc.normalization, 'weights': list(sc.weights), 'inputs': inputs}


def plot_selection(result, path):
  """Normalised I(X;F), I(Y;F), their weighted sum and the teacher's accuracy against epoch."""
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt

  snaps = result['snapshots']
  epochs = [s['epoch'] for s in snaps]
  fig, ax = plt.subplots(figsize=(7, 4.2))
  ax.plot(epochs, [s['I_XF_normalized'] for s in snaps], 'o-', label='I(X;F), normalised')
  ax.plot(epochs, [s['I_YF_normalized'] for s in snaps], 's-', label='I(Y;F), normalised')
  ax.plot(epochs, [s['score'] for s in snaps], 'k--', alpha=0.6, label='score (weighted sum)')
  ax.axvline(result['chosen_epoch'], color='tab:red', alpha=0.4, lw=6,
             label=f'T* = epoch {result["chosen_epoch"]}')
  ax.set_xlabel('teacher epoch')
  ax.set_ylabel(f'normalised MI ({result["normalization"]})')
  acc = ax.twinx()
  acc.plot(epochs, [100 * s['teacher_test_accuracy'] for s in snaps], '^:', color='tab:green',
           label='teacher test accuracy')
  acc.set_ylabel('teacher test accuracy (%)', color='tab:green')
  lines = ax.get_legend_handles_labels()
  more = acc.get_legend_handles_labels()
  ax.legend(lines[0] + more[0], lines[1] + more[1], loc='lower right', fontsize=8)
  ax.set_title(f'MI over snapshots ({result["estimator"]["method"]} estimator)')
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def write_selection(result, workdir):
  path = selection_path(workdir)
  path.parent.mkdir(parents=True, exist_ok=True)
  plot_selection(result, selection_plot_path(workdir))
  write_json(path, result)


def run(config, workdir):
  """Estimates MI over the snapshots of teacher seed config.seed and picks T*; a selection is
  recomputed only when its snapshots or settings changed."""
  path = selection_path(workdir)
  teacher = teacher_run_dir(workdir, config.teacher.arch, config.seed)
  recorded = read_json(path).get('inputs') if path.exists() else None
  if recorded is not None and recorded == selection_inputs(config, teacher):
    logging.info('selection %s is current; skipping', path)
  else:
    if path.exists():
      print(f'selection {path} is stale (its snapshots or settings changed): recomputing it')
    write_selection(run_selection(config, load_dataset(config.data), teacher), workdir)
  print(report.selection_console_table(read_json(path)))
  for warning in read_json(path)['warnings']:
    print(f'warning: {warning}')
  print(f'selected T* = epoch {read_json(path)["chosen_epoch"]}: {path} and mi.png')
