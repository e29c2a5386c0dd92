"""The regret of each selection setting over the studies: how much a user loses by trusting T*.

  python experiments/regret.py jpeg_fit=runs/cifar10_jpeg_fit fmnist_fit=runs/fashion_mnist_fit \
      [--selection jpeg_fit=OTHER/selection/mi.json ...] [--embed]

For each study (a finished workdir with students from every snapshot): the best snapshot in
hindsight is the single-snapshot teacher choice (`epoch:E`, `final`) whose students have the
highest mean last-epoch test accuracy; a setting's regret is that mean minus the mean of the
students from the setting's T*, ± the standard error of the difference over student seeds (0 when
T* is the best snapshot). Settings: every estimator in the workdir's selection/mi.json (and in each
`--selection` file: the select stage run with another feature or split on the same snapshots),
under every normalisation (recomputed from the recorded curves: Algorithm 1's choice is a function
of them), plus the plain rules 'final' and 'the snapshot with the best teacher accuracy'. A T*
with no students is reported as such, never guessed.

Prints the table, and a warning line for a partial study (unequal student seeds, one seed);
with --embed, and only without such warnings, writes experiments/regret.json and replaces the
block between `<!-- regret -->` and `<!-- end regret -->` in EXPERIMENTS.md. An extra selection
computed from other snapshots than the study's is refused. The default setting should be the one
whose worst regret is smallest.
"""

import argparse
import csv
import json
import math
import pathlib

from ckd_jax.mi import selection
from ckd_jax.workdir import layout
from ckd_jax.workdir.files import read_json, write_text

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCUMENT = ROOT / 'EXPERIMENTS.md'
BEGIN, END = '<!-- regret -->', '<!-- end regret -->'


def snapshot_students(workdir):
  """{snapshot epoch: [last test accuracy (%) of each student seed]} of the single-snapshot
  teacher choices, from the report's results.csv."""
  for name in ('config.json', 'results.csv', f'{layout.SELECTION_DIR}/{layout.MI_JSON}'):
    if not (pathlib.Path(workdir) / name).exists():
      raise SystemExit(
        f'error: {workdir}/{name} is missing: run the study (its report stage '
        'writes results.csv), or embed it with experiments/embed_reports.py'
      )
  final_epoch = read_json(pathlib.Path(workdir) / 'config.json')['teacher']['epochs']
  by_epoch = {}
  with open(pathlib.Path(workdir) / 'results.csv', newline='') as f:
    for row in csv.DictReader(f):
      choice = row['teacher_choice']
      if row['kind'] != 'student' or not (choice == 'final' or choice.startswith('epoch:')):
        continue
      epoch = final_epoch if choice == 'final' else int(choice.split(':')[1])
      by_epoch.setdefault(epoch, []).append(100 * float(row['last_test_accuracy']))
  if not by_epoch:
    raise SystemExit(
      f'{workdir}/results.csv has no students from single snapshots: run the '
      'distill and report stages first'
    )
  return by_epoch


def _mean_se(values):
  mean = sum(values) / len(values)
  if len(values) < 2:
    return mean, float('nan')
  var = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
  return mean, math.sqrt(var / len(values))


def settings(mi_json, digests=None):
  """([(setting name, T*)] for every estimator of a mi.json under every normalisation, [(epoch,
  teacher test accuracy)], the snapshot digests it was computed from). With `digests`, a mi.json
  computed from other snapshots is refused (its T* would be judged on students it did not see)."""
  record = read_json(mi_json)
  own = record.get('inputs', {}).get('snapshot_digests')
  if digests is not None and own != digests:
    raise SystemExit(
      f"error: {mi_json} was computed from other snapshots than the study's "
      "selection/mi.json: run its select stage on the study's teachers"
    )
  estimators = record.get('estimators') or {record['estimator']['method']: record}
  weights = tuple(record.get('weights', (1.0, 1.0)))
  found = []
  for method, result in estimators.items():
    info = result['estimator']
    snapshots = result['snapshots']
    epochs = [s['epoch'] for s in snapshots]
    for normalization in selection.NORMALIZATIONS:
      chosen = selection.select_teacher(
        epochs,
        [s['I_XF'] for s in snapshots],
        [s['I_YF'] for s in snapshots],
        normalization,
        weights,
      )['chosen_epoch']
      name = f'{method} · {info["feature"]} · {info["split"]} · {normalization}'
      found.append((name, chosen))
  return found, [(s['epoch'], s['teacher_test_accuracy']) for s in record['snapshots']], own


def regret(means, best, chosen):
  """(regret, its SE) of choosing epoch `chosen` given {epoch: (mean, SE)} and the best epoch,
  or None when no student learnt from `chosen`."""
  if chosen not in means:
    return None
  if chosen == best:
    return 0.0, 0.0
  (b, b_se), (c, c_se) = means[best], means[chosen]
  return b - c, math.hypot(b_se, c_se)


def partial_warnings(workdir, students):
  """One line per way the students are too few to judge by: unequal seeds, or one seed (no SE)."""
  counts = {epoch: len(accs) for epoch, accs in students.items()}
  warnings = []
  if len(set(counts.values())) > 1:
    warnings.append(
      f'{workdir}: the snapshots have unequal numbers of students {counts}: a '
      'partial study (rerun it to the end)'
    )
  if min(counts.values()) < 2:
    warnings.append(f'{workdir}: a snapshot with one student has no standard error (± nan)')
  return warnings


def study_rows(workdir, extra_selections):
  students = snapshot_students(workdir)
  found, teacher_acc, digests = settings(layout.selection_path(workdir))
  for path in extra_selections:
    found += settings(path, digests)[0]
  found.append(('rule: final snapshot', max(e for e, _ in teacher_acc)))
  found.append(
    (
      'rule: best teacher test accuracy (reads test labels)',
      max(teacher_acc, key=lambda item: (item[1], item[0]))[0],
    )
  )
  means = {epoch: _mean_se(accs) for epoch, accs in students.items()}
  best = max(means, key=lambda e: means[e][0])
  rows = {
    name: {'chosen_epoch': chosen, 'regret': regret(means, best, chosen)} for name, chosen in found
  }
  return {
    'best_epoch': best,
    'best_mean': means[best][0],
    'best_se': means[best][1],
    'students': {str(e): accs for e, accs in sorted(students.items())},
    'settings': rows,
    'warnings': partial_warnings(workdir, students),
  }


def _cell(entry):
  if entry['regret'] is None:
    return f'{entry["chosen_epoch"]}', 'no students'
  value, se = entry['regret']
  return f'{entry["chosen_epoch"]}', f'{value:.2f} ± {se:.2f}'


def table(studies):
  """Markdown: one row per setting, T* and regret per study, the worst regret; sorted by it."""
  names = sorted({name for study in studies.values() for name in study['settings']})

  def worst(name):
    values = [s['settings'][name]['regret'] for s in studies.values() if name in s['settings']]
    if any(v is None for v in values) or len(values) < len(studies):
      return float('inf')
    return max(v[0] for v in values)

  head = '| setting | ' + ' | '.join(f'{s}: T* | {s}: regret' for s in studies) + ' | worst |'
  rule = '|---|' + '---:|---:|' * len(studies) + '---:|'
  lines = [head, rule]
  for name in sorted(names, key=lambda n: (worst(n), n)):
    cells = []
    for study in studies.values():
      cells += _cell(study['settings'][name]) if name in study['settings'] else ['–', '–']
    w = worst(name)
    worst_cell = '–' if w == float('inf') else f'{w:.2f}'
    lines.append(f'| {name} | ' + ' | '.join(cells) + f' | {worst_cell} |')
  best = ', '.join(
    f'{s}: epoch {v["best_epoch"]} ({v["best_mean"]:.2f} ± {v["best_se"]:.2f})'
    for s, v in studies.items()
  )
  return (
    '\n'.join(lines) + f"\n\nBest snapshot in hindsight (students' mean last-epoch test "
    f'accuracy, %, ± SE over seeds): {best}. Regret in points, ± SE of the difference.\n'
  )


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('studies', nargs='+', help='study=workdir')
  parser.add_argument(
    '--selection',
    action='append',
    default=[],
    help='study=mi.json of another select run on the same snapshots',
  )
  parser.add_argument('--embed', action='store_true', help='write the table into EXPERIMENTS.md')
  args = parser.parse_args()
  extra = {}
  for item in args.selection:
    study, _, path = item.partition('=')
    extra.setdefault(study, []).append(path)
  studies = {}
  for item in args.studies:
    study, sep, workdir = item.partition('=')
    if not sep:
      raise SystemExit(f'expected study=workdir, got {item!r}')
    studies[study] = study_rows(workdir, extra.pop(study, []))
  if extra:
    raise SystemExit(f'error: --selection names studies that are not given: {sorted(extra)}')
  text = table(studies)
  print(text)
  warnings = [w for study in studies.values() for w in study['warnings']]
  for warning in warnings:
    print(f'warning: {warning}')
  if args.embed:
    if warnings:
      raise SystemExit('error: not embedded: the table rests on partial studies (warnings above)')
    write_text(ROOT / 'experiments' / 'regret.json', json.dumps(studies, indent=1) + '\n')
    document = DOCUMENT.read_text()
    if document.count(BEGIN) != 1 or document.count(END) != 1:
      raise SystemExit(f'EXPERIMENTS.md needs exactly one {BEGIN} … {END} block')
    head, rest = document.split(BEGIN)
    write_text(DOCUMENT, f'{head}{BEGIN}\n{text}{END}{rest.split(END)[1]}')


if __name__ == '__main__':
  main()
