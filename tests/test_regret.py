"""experiments/regret.py: each selection setting's T* and its regret, against hand computation."""

import csv
import importlib.util
import json
import math
import pathlib

import pytest

_PATH = pathlib.Path(__file__).resolve().parent.parent / 'experiments' / 'regret.py'
_SPEC = importlib.util.spec_from_file_location('regret', _PATH)
regret = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(regret)

# Students' last test accuracies per teacher choice (2 seeds each).
STUDENTS = {
  'epoch:10': (0.50, 0.52),
  'epoch:20': (0.60, 0.64),
  'final': (0.58, 0.58),
  'selected': (0.50, 0.52),
  'none': (0.40, 0.41),
}
# variational, minmax: scores 1 + 2/3, 1/9 + 0, 0 + 1 → epoch 10 (max and none too);
# kde, minmax: 0 + 0, 1 + 1, 0.8 + 0.8 → epoch 20.
CURVES = {
  'variational': ([100.0, 20.0, 10.0], [1.2, 1.0, 1.3]),
  'kde': ([2.0, 2.5, 2.4], [0.5, 1.0, 0.9]),
}


def _workdir(tmp_path):
  workdir = tmp_path / 'study'
  (workdir / 'selection').mkdir(parents=True)
  (workdir / 'config.json').write_text(json.dumps({'teacher': {'epochs': 30}}))
  with open(workdir / 'results.csv', 'w', newline='') as f:
    writer = csv.DictWriter(f, ['kind', 'teacher_choice', 'seed', 'last_test_accuracy'])
    writer.writeheader()
    writer.writerow({'kind': 'teacher', 'teacher_choice': '', 'seed': 0, 'last_test_accuracy': 0.7})
    for choice, accs in STUDENTS.items():
      for seed, acc in enumerate(accs):
        writer.writerow(
          {'kind': 'student', 'teacher_choice': choice, 'seed': seed, 'last_test_accuracy': acc}
        )
  estimators = {}
  for method, (i_xf, i_yf) in CURVES.items():
    estimators[method] = {
      'estimator': {'method': method, 'feature': 'penultimate', 'split': 'train'},
      'snapshots': [
        {'epoch': e, 'I_XF': x, 'I_YF': y, 'teacher_test_accuracy': a}
        for e, x, y, a in zip((10, 20, 30), i_xf, i_yf, (0.5, 0.7, 0.68))
      ],
    }
  record = dict(estimators['variational'], estimators=estimators, weights=[1.0, 1.0])
  (workdir / 'selection' / 'mi.json').write_text(json.dumps(record))
  return workdir


def test_regret_of_each_setting_equals_the_hand_computation(tmp_path):
  rows = regret.study_rows(_workdir(tmp_path), [])
  assert rows['best_epoch'] == 20 and rows['best_mean'] == pytest.approx(62.0)
  settings = rows['settings']
  # variational, minmax: epoch 10; regret 62 - 51 = 11 ± hypot(2, 1): the SEs of the means of
  # (60, 64) and (50, 52), std/√2 = 2 and 1.
  entry = settings['variational · penultimate · train · minmax']
  assert entry['chosen_epoch'] == 10
  assert entry['regret'][0] == pytest.approx(11.0)
  assert entry['regret'][1] == pytest.approx(math.hypot(2.0, 1.0))
  assert settings['kde · penultimate · train · minmax'] == {
    'chosen_epoch': 20,
    'regret': (0.0, 0.0),
  }
  # 'none': variational's raw I(X;F) (100 nats) dominates its score → epoch 10 again.
  assert settings['variational · penultimate · train · none']['chosen_epoch'] == 10
  final = settings['rule: final snapshot']
  assert final['chosen_epoch'] == 30 and final['regret'][0] == pytest.approx(4.0)
  assert settings['rule: best teacher test accuracy (reads test labels)']['chosen_epoch'] == 20


def test_a_t_star_without_students_is_said_and_ranks_last(tmp_path):
  workdir = _workdir(tmp_path)
  record = json.loads((workdir / 'selection' / 'mi.json').read_text())
  record['estimators']['kde']['snapshots'][2]['I_YF'] = 5.0  # kde now picks epoch 30 (0.8 + 1) …
  (workdir / 'selection' / 'mi.json').write_text(json.dumps(record))
  rows = regret.study_rows(workdir, [])
  assert rows['settings']['kde · penultimate · train · minmax']['chosen_epoch'] == 30
  record['estimators']['kde']['snapshots'][2]['epoch'] = 25  # … or one without students
  (workdir / 'selection' / 'mi.json').write_text(json.dumps(record))
  rows = regret.study_rows(workdir, [])
  entry = rows['settings']['kde · penultimate · train · minmax']
  assert entry == {'chosen_epoch': 25, 'regret': None}
  text = regret.table({'s': rows})
  lines = [
    line for line in text.splitlines() if line.startswith('| kde · penultimate · train · minmax')
  ]
  assert lines == ['| kde · penultimate · train · minmax | 25 | no students | – |']
  body = [
    line for line in text.splitlines() if line.startswith(('| kde', '| variational', '| rule'))
  ]
  unknown = ['no students' in line for line in body]
  assert unknown == sorted(unknown) and any(unknown)  # an unknown regret ranks after every known


def test_a_partial_study_and_a_selection_from_other_snapshots_are_said(tmp_path):
  workdir = _workdir(tmp_path)
  record = json.loads((workdir / 'selection' / 'mi.json').read_text())
  record['inputs'] = {'snapshot_digests': {'t@10': 'a'}}
  (workdir / 'selection' / 'mi.json').write_text(json.dumps(record))
  assert regret.study_rows(workdir, [])['warnings'] == []
  other = tmp_path / 'other.json'
  other.write_text(json.dumps(dict(record, inputs={'snapshot_digests': {'t@10': 'b'}})))
  with pytest.raises(SystemExit, match='computed from other snapshots'):
    regret.study_rows(workdir, [other])
  with open(workdir / 'results.csv', 'a', newline='') as f:  # a third seed for one snapshot only
    csv.writer(f).writerow(['student', 'epoch:20', 2, 0.6])
  warnings = regret.study_rows(workdir, [])['warnings']
  assert len(warnings) == 1 and 'unequal numbers of students' in warnings[0]
