"""The report stage: report.md, results.csv and PNG plots, built only from what the workdir holds.

It reads files only (config.json, metrics.jsonl, final.json, mi.json) and imports neither JAX nor
Orbax, so a report can be rebuilt anywhere. The select and distill stages' console tables
(`stages/console.py`) are built from the same rows.

Tables follow the paper: teacher accuracy per snapshot, the MI table with T*, student accuracy per
teacher choice (Table 3 style: mean ± std over seeds, last and best epoch labelled, the winner in
bold), snapshot versus full ensemble with each teacher's training cost (Table 2 style), and the
paper's own numbers side by side where the dataset and the pair match.
"""

import csv
import pathlib
import statistics

from ckd_jax.distributed import primary_only
from ckd_jax.stages import claims
from ckd_jax.stages.teacher_choices import slug
from ckd_jax.workdir import layout
from ckd_jax.workdir.files import read_json, read_jsonl, write_text
from ckd_jax.workdir.layout import RunFiles, student_run_dir, teacher_run_dir
from ckd_jax.workdir.record import read_config

# Wang et al. 2022, Table 3 (CIFAR-100 top-1 %): teacher choice -> student accuracy; and the
# accuracy of each network trained alone.
PAPER_TABLE3 = {
  ('wrn_40_2', 'wrn_40_1'): {
    'teacher': 76.53,
    'student': 70.38,
    'epoch:60': 72.34,
    'epoch:100': 72.76,
    'epoch:140': 73.08,
    'final': 72.68,
    'selected': 73.26,
  },
  ('wrn_40_2', 'mobilenetv2_075'): {
    'teacher': 76.53,
    'student': 64.49,
    'epoch:60': 68.21,
    'epoch:100': 68.99,
    'epoch:140': 68.54,
    'final': 68.03,
    'selected': 68.58,
  },
  ('resnet110', 'resnet32'): {
    'teacher': 73.41,
    'student': 70.16,
    'epoch:60': 70.74,
    'epoch:100': 72.49,
    'epoch:140': 72.46,
    'final': 72.48,
    'selected': 72.63,
  },
  ('resnet110', 'mobilenetv2_075'): {
    'teacher': 73.41,
    'student': 64.49,
    'epoch:60': 67.84,
    'epoch:100': 68.79,
    'epoch:140': 69.01,
    'final': 68.63,
    'selected': 68.99,
  },
}
CSV_FIELDS = (
  'kind',
  'arch',
  'seed',
  'teacher_choice',
  'teacher_test_accuracy',
  'last_test_accuracy',
  'best_test_accuracy',
  'best_epoch',
  'epochs',
  'train_time_s',
  'run_dir',
)


def _mean_std(values):
  spread = statistics.stdev(values) if len(values) > 1 else 0.0
  return statistics.mean(values), spread


def format_pct(values):
  """'mean ± std' in percent of accuracies in [0, 1]."""
  mean, spread = _mean_std(values)
  return f'{100 * mean:.2f} ± {100 * spread:.2f}'


def _row(kind, arch, seed, run, choice=''):
  """A results.csv row from a finished run's final.json; None while the run is unfinished."""
  files = RunFiles(run)
  if not files.is_finished():
    return None
  final = read_json(files.final)
  return dict(
    kind=kind,
    arch=arch,
    seed=seed,
    teacher_choice=choice,
    teacher_test_accuracy=final.get('teacher_test_accuracy', ''),
    run_dir=str(run),
    **{
      f: final[f]
      for f in ('last_test_accuracy', 'best_test_accuracy', 'best_epoch', 'epochs', 'train_time_s')
    },
  )


def collect(workdir, config):
  """Every finished run as a row of results.csv (teachers first, then students by choice)."""
  teacher_config, distill_config = config['teacher'], config['distill']
  rows = [
    _row(
      'teacher',
      teacher_config['arch'],
      config['seed'] + k,
      teacher_run_dir(workdir, teacher_config['arch'], config['seed'] + k),
    )
    for k in range(teacher_config['num_seeds'])
  ]
  for spec in distill_config['teachers']:  # not validated: the report shows whatever runs exist
    rows += [
      _row(
        'student',
        distill_config['student'],
        config['seed'] + k,
        student_run_dir(workdir, distill_config['student'], slug(spec), config['seed'] + k),
        spec,
      )
      for k in range(distill_config['num_seeds'])
    ]
  return [row for row in rows if row is not None]


def write_csv(rows, path):
  with open(path, 'w', newline='') as f:
    writer = csv.DictWriter(f, fieldnames=CSV_FIELDS)
    writer.writeheader()
    writer.writerows(rows)


def _teacher_section(workdir, config):
  """Test accuracy of each kept snapshot, from metrics.jsonl (the snapshot holds the same
  number)."""
  seeds = [config['seed'] + k for k in range(config['teacher']['num_seeds'])]
  runs = [RunFiles(teacher_run_dir(workdir, config['teacher']['arch'], s)) for s in seeds]
  accuracy = [{r['epoch']: r['test_accuracy'] for r in read_jsonl(run.metrics)} for run in runs]
  epochs = list(config['teacher']['snapshot_epochs'])
  lines = [
    '## Teacher accuracy per snapshot',
    '',
    f'{config["teacher"]["arch"]}, test accuracy (%) of each kept snapshot.',
    '',
    '| epoch | ' + ' | '.join(f'seed {s}' for s in seeds) + ' |',
    '|---:|' + '---:|' * len(seeds),
  ]
  for epoch in epochs:
    cells = [
      f'{100 * acc[epoch]:.2f}' if run.snapshot(epoch).is_dir() and epoch in acc else '–'
      for run, acc in zip(runs, accuracy)
    ]
    lines.append(f'| {epoch} | ' + ' | '.join(cells) + ' |')
  return lines


_SPLIT_WORDS = {
  'train': 'held-out training images (no test image read)',
  'test': 'test images (the selection saw test labels)',
}


def _mi_section(workdir):
  path = layout.selection_path(workdir)
  if not path.exists():
    return ['## Mutual information and T*', '', 'The select stage has not run.']
  result = read_json(path)
  est = result['estimator']
  lines = [
    '## Mutual information and T*',
    '',
    f'Estimator `{est["method"]}` on the {est["feature"]} feature, {est["num_samples"]} '
    f'{_SPLIT_WORDS[est.get("split", "test")]}; normalisation `{result["normalization"]}`, '
    f'weights {result["weights"]}; nats.',
    '',
    '| epoch | teacher acc (%) | I(X;F) | I(Y;F) | I(X;F) norm. | I(Y;F) norm. | score | '
    'T* in repeats |',
    '|---:|---:|---:|---:|---:|---:|---:|---:|',
  ]
  for s in result['snapshots']:
    mark = ' **T\\***' if s['epoch'] == result['chosen_epoch'] else ''
    lines.append(
      f'| {s["epoch"]}{mark} | {100 * s["teacher_test_accuracy"]:.2f} | '
      f'{mi_value(s, "I_XF", 4)} | {mi_value(s, "I_YF", 4)} | '
      f'{s["I_XF_normalized"]:.3f} | {s["I_YF_normalized"]:.3f} | {s["score"]:.3f} | '
      f'{s.get("chosen_in_repeats", "")} |'
    )
  plot = f'{layout.SELECTION_DIR}/{layout.MI_PLOT}'
  warnings = result.get('warnings', [])
  repeats = result.get('repeats')
  lines += [
    '',
    f'T* = epoch {result["chosen_epoch"]} (ties: the earliest of the snapshots with the '
    f'top score). ![MI over snapshots]({plot})',
  ]
  if repeats and repeats['count'] > 1:
    lines += [
      '',
      f'Uncertainty: {repeats["count"]} repeats on half-samples of the evaluation '
      f'images (fraction {repeats["subsample"]}) with their own probe/decoder seeds give '
      f'mean ± std above; {repeats["stability"]}.',
    ]
  lines += [''] + [f'**Warning:** {w}.' for w in warnings] if warnings else []
  if 'comparison' in result:
    lines += [
      '',
      '### Estimators compared on the same snapshots',
      '',
      f'T* follows `{result["comparison"]["decides"]}`, the first in `select.method`. '
      "Spearman's ρ says whether two estimators order the snapshots alike (1: the same "
      'order; –: a flat curve orders nothing).',
      '',
    ]
    lines += (
      _markdown_table(*estimator_rows(result)) + [''] + _markdown_table(*correlation_rows(result))
    )
  return lines


def estimator_rows(result):
  header = ('estimator', 'T*', 'T* in repeats', 'other epochs chosen', 'warnings')
  rows = []
  for method in result['comparison']['methods']:  # select.method's order (mi.json sorts keys)
    selection = result['estimators'][method]
    chosen, repeats = selection['chosen_epoch'], selection['repeats']['chosen_epochs']
    others = sorted(set(repeats) - {chosen})
    rows.append(
      (
        method,
        str(chosen),
        f'{repeats.count(chosen)} of {len(repeats)}',
        ', '.join(map(str, others)) or '–',
        str(len(selection['warnings'])),
      )
    )
  return header, rows


def correlation_rows(result):
  header = ('estimators', 'ρ I(X;F)', 'ρ I(Y;F)', 'ρ score')
  cell = lambda rho: '–' if rho is None else f'{rho:+.2f}'
  return header, [
    (' vs '.join(p['estimators']), cell(p['I_XF']), cell(p['I_YF']), cell(p['score']))
    for p in result['comparison']['rank_correlation']
  ]


def _markdown_table(header, rows):
  return ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)] + [
    '| ' + ' | '.join(row) + ' |' for row in rows
  ]


def student_summary(rows):
  """{choice: {'teacher': accuracy or '', 'last': [...], 'best': [...]}} in config order."""
  summary = {}
  for row in rows:
    if row['kind'] != 'student':
      continue
    entry = summary.setdefault(
      row['teacher_choice'], {'teacher': row['teacher_test_accuracy'], 'last': [], 'best': []}
    )
    entry['last'].append(row['last_test_accuracy'])
    entry['best'].append(row['best_test_accuracy'])
  return summary


def _students_section(rows, config):
  summary = student_summary(rows)
  distill_config = config['distill']
  lines = [
    '## Students per teacher choice (Table 3 style)',
    '',
    f'{distill_config["student"]} students, test accuracy (%), mean ± std over '
    f'{distill_config["num_seeds"]} '
    'seed(s); *last* = after the final epoch, *best* = best epoch. Bold: the best mean of '
    'each column.',
    '',
    '| teacher choice | teacher acc | student last | student best | seeds |',
    '|---|---:|---:|---:|---:|',
  ]
  if not summary:
    return lines[:2] + ['The distill stage has not run.']
  best_last = max(statistics.mean(e['last']) for e in summary.values())
  best_best = max(statistics.mean(e['best']) for e in summary.values())
  for choice, e in summary.items():
    last = format_pct(e['last'])
    best = format_pct(e['best'])
    last = f'**{last}**' if statistics.mean(e['last']) == best_last else last
    best = f'**{best}**' if statistics.mean(e['best']) == best_best else best
    teacher = '' if e['teacher'] == '' else f'{100 * e["teacher"]:.2f}'
    lines.append(f'| {choice} | {teacher} | {last} | {best} | {len(e["last"])} |')
  winners = kd_winners(summary)
  if winners is not None:
    lines += [
      '',
      'KD beat the no-KD baseline (last-epoch mean) with: '
      + (
        ', '.join(f'`{w}`' for w in winners)
        if winners
        else '**no teacher choice** — on this run distillation did not help.'
      ),
    ]
  return lines


def kd_winners(summary):
  """Teacher choices whose students beat the no-KD students (last-epoch mean); None without them."""
  if 'none' not in summary:
    return None
  baseline = statistics.mean(summary['none']['last'])
  return [c for c, e in summary.items() if c != 'none' and statistics.mean(e['last']) > baseline]


def _ensemble_section(rows, config):
  """Snapshot versus full ensemble and what each teacher cost to train."""
  summary = student_summary(rows)
  teachers = [r for r in rows if r['kind'] == 'teacher']
  ensembles = [c for c in summary if c.startswith(('snapshot_ensemble', 'full_ensemble'))]
  lines = ['## Snapshot versus full ensemble (Table 2 style)', '']
  if not ensembles or not teachers:
    return lines + ['No ensemble teacher in this run.']
  lines += [
    '| teacher | teacher acc | student last | teacher training: runs | epochs | training time |',
    '|---|---:|---:|---:|---:|---:|',
  ]
  one_run = teachers[0]
  for choice in ['final'] * ('final' in summary) + ensembles:
    runs = (
      teachers[: int(choice.split(':')[1])] if choice.startswith('full_ensemble') else [one_run]
    )
    e = summary[choice]
    lines.append(
      f'| {choice} | {100 * e["teacher"]:.2f} | {format_pct(e["last"])} | '
      f'{len(runs)} | {sum(r["epochs"] for r in runs)} | '
      f'{sum(r["train_time_s"] for r in runs) / 60:.1f} min |'
    )
  lines += ['', 'A snapshot ensemble costs one teacher run; a full ensemble of M costs M runs.']
  return lines


def _claims_section(workdir, rows, config):
  path = layout.selection_path(workdir)
  return claims.section(
    student_summary(rows),
    [r for r in rows if r['kind'] == 'teacher'],
    config['teacher']['epochs'],
    read_json(path) if path.exists() else None,
    config['distill']['num_seeds'],
  )


def _paper_section(rows, config):
  key = (config['teacher']['arch'], config['distill']['student'])
  if config['data']['name'] != 'cifar100' or key not in PAPER_TABLE3:
    return [
      "## The paper's numbers",
      '',
      f'The paper reports no numbers for {key[0]} → {key[1]} on {config["data"]["name"]}.',
    ]
  paper = PAPER_TABLE3[key]
  summary = student_summary(rows)
  lines = [
    "## The paper's numbers (Wang et al. 2022, Table 3, CIFAR-100)",
    '',
    '| teacher choice | paper | this run (last) |',
    '|---|---:|---:|',
  ]
  for choice in ('none', 'epoch:60', 'epoch:100', 'epoch:140', 'final', 'selected'):
    ours = format_pct(summary[choice]['last']) if choice in summary else '–'
    theirs = paper['student'] if choice == 'none' else paper[choice]
    lines.append(f'| {choice} | {theirs:.2f} | {ours} |')
  return lines


def _cost_section(workdir):
  """Each stage's wall time over all its legs, and the software, from manifest.json."""
  path = layout.manifest_path(workdir)
  if not path.exists():
    return ['## Wall time', '', 'No stage has finished yet.']
  manifest = read_json(path)
  stages = [
    (stage, manifest['stages'][stage])
    for stage in layout.STAGES
    if stage in manifest['stages'] and stage != 'report'
  ]
  total = sum(entry['duration_s'] for _, entry in stages)
  software = manifest.get('software', {})
  return (
    [
      '## Wall time',
      '',
      'Every leg of each stage, summed: a stage resumed after a kill or rerun '
      'to add runs counts each command that ran it (a leg killed outright, e.g. by SIGKILL, is '
      'lost).',
      '',
    ]
    + _markdown_table(
      ('stage', 'wall time', 'legs', 'finished at'),
      [
        (
          stage,
          f'{entry["duration_s"] / 60:.1f} min',
          str(entry.get('legs', 1)),
          entry['finished_at'] or 'not finished',
        )
        for stage, entry in stages
      ]
      + [('sum of these', f'{total / 60:.1f} min', '', '')],
    )
    + ['', 'Software: ' + ', '.join(f'{k} {v}' for k, v in sorted(software.items())) + '.']
  )


def _plot_students_vs_teacher_epoch(rows, config, path):
  import matplotlib

  matplotlib.use('Agg')
  import matplotlib.pyplot as plt

  summary = student_summary(rows)
  points = []
  for choice, e in summary.items():
    if choice.startswith('epoch:') or choice == 'final':
      epoch = config['teacher']['epochs'] if choice == 'final' else int(choice.split(':')[1])
      mean, spread = _mean_std(e['last'])
      points.append((epoch, 100 * mean, 100 * spread, 100 * e['teacher']))
  if not points:
    return False
  points.sort()
  fig, ax = plt.subplots(figsize=(6.5, 4))
  ax.errorbar(
    [p[0] for p in points],
    [p[1] for p in points],
    yerr=[p[2] for p in points],
    fmt='o-',
    capsize=3,
    label='student (last epoch)',
  )
  ax.plot([p[0] for p in points], [p[3] for p in points], '^:', label='teacher snapshot')
  if 'none' in summary:
    ax.axhline(
      100 * statistics.mean(summary['none']['last']), color='gray', ls='--', label='student alone'
    )
  if 'selected' in summary:
    ax.axhline(
      100 * statistics.mean(summary['selected']['last']),
      color='tab:red',
      ls='-.',
      label='student from T*',
    )
  ax.set_xlabel('teacher epoch')
  ax.set_ylabel('test accuracy (%)')
  ax.set_title(
    f'{config["distill"]["student"]} distilled from {config["teacher"]["arch"]} snapshots'
  )
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return True


def _plot_teacher_curves(workdir, config, path):
  import matplotlib

  matplotlib.use('Agg')
  import matplotlib.pyplot as plt

  fig, ax = plt.subplots(figsize=(6.5, 4))
  for k in range(config['teacher']['num_seeds']):
    records = read_jsonl(
      RunFiles(teacher_run_dir(workdir, config['teacher']['arch'], config['seed'] + k)).metrics
    )
    if records:
      ax.plot(
        [r['epoch'] for r in records],
        [100 * r['test_accuracy'] for r in records],
        label=f'seed {config["seed"] + k}',
      )
  for epoch in config['teacher']['snapshot_epochs']:
    ax.axvline(epoch, color='gray', alpha=0.15)
  ax.set_xlabel('epoch (grey: kept snapshots)')
  ax.set_ylabel('teacher test accuracy (%)')
  ax.set_title(f'{config["teacher"]["arch"]} teachers')
  if ax.get_legend_handles_labels()[0]:  # no legend before any teacher epoch
    ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def build_report(workdir):
  """Writes report.md, results.csv and the plots; returns the path of report.md."""
  workdir = pathlib.Path(workdir)
  config = read_config(workdir)
  rows = collect(workdir, config)
  write_csv(rows, workdir / layout.RESULTS_CSV)
  _plot_teacher_curves(workdir, config, workdir / layout.TEACHER_PLOT)
  has_student_plot = _plot_students_vs_teacher_epoch(rows, config, workdir / layout.STUDENTS_PLOT)
  sections = [
    [
      f'# Checkpoint KD report: {config["teacher"]["arch"]} → '
      f'{config["distill"]["student"]} on {config["data"]["name"]}',
      '',
      f'Built from the runs in this workdir; every number is also in `{layout.RESULTS_CSV}`.',
      '',
      f'![teacher accuracy]({layout.TEACHER_PLOT})',
    ],
    _teacher_section(workdir, config),
    _mi_section(workdir),
    _students_section(rows, config)
    + (['', f'![students vs teacher epoch]({layout.STUDENTS_PLOT})'] if has_student_plot else []),
    _ensemble_section(rows, config),
    _claims_section(workdir, rows, config),
    _paper_section(rows, config),
    _cost_section(workdir),
  ]
  path = workdir / layout.REPORT
  write_text(path, '\n\n'.join('\n'.join(s) for s in sections) + '\n')
  return path


def mi_value(snapshot, key, digits):
  """'mean ± std' of an MI value over the repeats (just the mean for one estimate)."""
  std = snapshot.get(f'{key}_std', 0.0)
  return f'{snapshot[key]:.{digits}f}' + (f' ± {std:.{digits}f}' if std else '')


@primary_only
def run(config, workdir):
  """Rebuilds the report from the workdir (cheap: always redone)."""
  del config  # the report describes the workdir, whose config.json is the config of its runs
  print(f'report: {build_report(workdir)}')
