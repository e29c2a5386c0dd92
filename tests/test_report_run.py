"""The whole pipeline on a tiny config: the report's numbers against the runs' final.json files,
and a run killed at a stage boundary and inside a student run ending with the same report."""

import csv
import json
import re
import shutil
import statistics
import subprocess
import sys

import pipeline_configs
import pytest

from ckd_jax import pipeline
from ckd_jax.data import batching
from ckd_jax.stages import report
from ckd_jax.workdir import WorkdirLockedError, record, workdir_lock

CHOICES = ('epoch:1', 'selected', 'full_ensemble:2', 'none')


def tiny_config():
  return pipeline_configs.tiny_config(
    teacher_seeds=2,
    student_seeds=2,
    checkpoint_every=3,
    student_epochs=1,
    choices=CHOICES,
    select=dict(method='kde', num_samples=0),
  )


@pytest.fixture(scope='module')
def reference(tmp_path_factory):
  workdir = tmp_path_factory.mktemp('reference')
  pipeline.run(tiny_config(), workdir)
  return workdir


def _rows(workdir):
  with open(workdir / 'results.csv') as f:
    return list(csv.DictReader(f))


def _deterministic(workdir):
  """results.csv and report.md without wall times and paths (they differ between runs)."""
  rows = [
    {k: v for k, v in r.items() if k not in ('train_time_s', 'run_dir')} for r in _rows(workdir)
  ]
  report = (workdir / 'report.md').read_text().split('## Wall time')[0]
  report = re.sub(r'\| [\d.]+ min \|', '| T |', report)
  return rows, report


def test_results_csv_holds_every_run_with_its_final_json_numbers(reference):
  rows = _rows(reference)
  assert [r['kind'] for r in rows] == ['teacher'] * 2 + ['student'] * 8
  for row in rows:
    final = json.loads(
      (reference / row['run_dir'].split(str(reference) + '/')[1] / 'final.json').read_text()
    )
    assert float(row['last_test_accuracy']) == final['last_test_accuracy']
    assert float(row['best_test_accuracy']) == final['best_test_accuracy']
    if row['teacher_choice'] not in ('', 'none'):
      assert float(row['teacher_test_accuracy']) == final['teacher_test_accuracy']


def test_report_tables_are_the_means_of_the_runs(reference):
  report = (reference / 'report.md').read_text()
  finals = {}
  for run in (reference / 'students').iterdir():
    final = json.loads((run / 'final.json').read_text())
    finals.setdefault(final['teacher_choice'], []).append(final)
  for choice, runs in finals.items():
    last = [f['last_test_accuracy'] for f in runs]
    best = [f['best_test_accuracy'] for f in runs]
    expected = (
      f'{100 * statistics.mean(last):.2f} ± {100 * statistics.stdev(last):.2f}',
      f'{100 * statistics.mean(best):.2f} ± {100 * statistics.stdev(best):.2f}',
    )
    line = next(l for l in report.splitlines() if l.startswith(f'| {choice} |'))
    cells = [c.strip().strip('*') for c in line.strip('|').split('|')]
    assert (cells[2], cells[3]) == expected, line
    assert cells[4] == '2'
  chosen = json.loads((reference / 'selection' / 'mi.json').read_text())['chosen_epoch']
  assert f'T* = epoch {chosen}' in report
  assert 'KD beat the no-KD baseline' in report
  assert 'Best single snapshot in hindsight: `' in report  # claim 2; claim 1 needs 'final'
  assert 'An intermediate snapshot teaches better than the final one.** Not measured' in report
  assert re.search(r'\| teacher \| [\d.]+ min \|', report)
  for png in ('teacher_accuracy.png', 'students_vs_teacher_epoch.png', 'selection/mi.png'):
    assert (reference / png).read_bytes()[:4] == b'\x89PNG'


def test_kill_at_a_stage_boundary_and_inside_a_student_gives_the_same_report(
  reference, tmp_path, monkeypatch
):
  def stop(config, workdir):
    raise RuntimeError('killed before select')

  monkeypatch.setitem(pipeline.STAGES, 'select', stop)
  with pytest.raises(RuntimeError, match='before select'):
    pipeline.run(tiny_config(), tmp_path)
  monkeypatch.undo()
  stages = _manifest_stages(tmp_path)
  assert stages['select']['finished_at'] is None and stages['select']['legs'] == 1

  real_batch = batching.TrainBatches.batch
  calls = {'n': 0}

  def killed_in_the_third_student(self, step):
    if step == 0:
      calls['n'] += 1
    if calls['n'] == 3 and step == 3:  # after its checkpoint at step 3
      raise RuntimeError('killed inside a student')
    return real_batch(self, step)

  monkeypatch.setattr(batching.TrainBatches, 'batch', killed_in_the_third_student)
  with pytest.raises(RuntimeError, match='inside a student'):
    pipeline.run(tiny_config(), tmp_path)
  assert list((tmp_path / 'students').glob('*/resume/3'))
  monkeypatch.undo()
  interrupted = _manifest_stages(tmp_path)
  assert interrupted['distill']['finished_at'] is None and interrupted['distill']['duration_s'] > 0

  pipeline.run(tiny_config(), tmp_path)
  assert _deterministic(tmp_path) == _deterministic(reference)
  stages = _manifest_stages(tmp_path)
  # Three commands ran teacher and select, two distill, one report: every leg's time counts.
  assert [stages[s]['legs'] for s in ('teacher', 'select', 'distill', 'report')] == [3, 3, 2, 1]
  assert stages['distill']['duration_s'] > interrupted['distill']['duration_s']
  assert all(stage['finished_at'] for stage in stages.values())
  assert '| distill |' in (tmp_path / 'report.md').read_text().split('## Wall time')[1]


def _manifest_stages(workdir):
  return json.loads((workdir / 'manifest.json').read_text())['stages']


def test_manifest_records_every_stage(reference):
  manifest = json.loads((reference / 'manifest.json').read_text())
  assert set(manifest['stages']) == {'teacher', 'select', 'distill', 'report'}
  assert all(s['duration_s'] >= 0 for s in manifest['stages'].values())
  assert manifest['software']['jax'] and manifest['software']['python']
  assert manifest['software']['cpu']


def test_the_manifest_names_the_cpu_and_its_vector_extension(tmp_path):
  cpuinfo = tmp_path / 'cpuinfo'
  cpuinfo.write_text(
    'processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 17\n'
    'model name\t: AMD EPYC\nflags\t\t: fpu sse2 avx avx2 avx512f\n\n'
    'processor\t: 1\nmodel name\t: other\n'
  )
  assert record.cpu_description(cpuinfo) == 'AMD EPYC (family 25, model 17, avx512f)'
  cpuinfo.write_text('model name\t: Some CPU\nflags\t: fpu sse2\n')
  assert record.cpu_description(cpuinfo) == 'Some CPU (family ?, model ?, no avx)'
  cpuinfo.write_text('model name\t: ARMv8 Processor\nFeatures\t: fp asimd evtstrm\n')  # Arm
  assert record.cpu_description(cpuinfo) == 'ARMv8 Processor (family ?, model ?, asimd)'


def test_report_stage_alone_rebuilds_the_report(reference):
  before = (reference / 'report.md').read_text(), (reference / 'results.csv').read_text()
  (reference / 'report.md').unlink()
  (reference / 'results.csv').unlink()
  config = tiny_config()
  config.stages = 'report'
  pipeline.run(config, reference)
  assert ((reference / 'report.md').read_text(), (reference / 'results.csv').read_text()) == before


def test_a_second_process_cannot_use_the_workdir(reference):
  with workdir_lock(reference):
    with pytest.raises(WorkdirLockedError, match='in use by another process'):
      pipeline.run(tiny_config(), reference)


def test_report_needs_neither_jax_nor_orbax(reference, tmp_path):
  copy = tmp_path / 'work'
  shutil.copytree(reference, copy)
  (copy / 'report.md').unlink()
  code = (
    'import sys; from ckd_jax.stages import report; report.build_report(sys.argv[1]); '
    "print(sorted({m.split('.')[0] for m in sys.modules} & {'jax', 'orbax', 'flax'}))"
  )
  out = subprocess.run(
    [sys.executable, '-c', code, str(copy)], capture_output=True, text=True, check=True
  ).stdout
  assert out.strip() == '[]'
  assert (copy / 'report.md').read_text() == (reference / 'report.md').read_text()


def _cells(report, first_cell):
  line = next(l for l in report.splitlines() if l.startswith(f'| {first_cell} |'))
  return [c.strip() for c in line.strip('|').split('|')]


def test_ensemble_section_counts_what_each_teacher_cost(reference):
  text = (reference / 'report.md').read_text()
  section = text.split('## Snapshot versus full ensemble')[1].split('\n## ')[0]
  teachers = [
    json.loads(p.read_text()) for p in sorted((reference / 'teachers').glob('*/final.json'))
  ]
  students = [
    json.loads(p.read_text())
    for p in (reference / 'students').glob('*_from_full_ensemble_2_*/final.json')
  ]
  cells = _cells(section, 'full_ensemble:2')
  last = [s['last_test_accuracy'] for s in students]
  assert cells[1] == f'{100 * students[0]["teacher_test_accuracy"]:.2f}'
  assert cells[2] == f'{100 * statistics.mean(last):.2f} ± {100 * statistics.stdev(last):.2f}'
  assert cells[3:5] == ['2', str(sum(t['epochs'] for t in teachers))]
  assert cells[5] == f'{sum(t["train_time_s"] for t in teachers) / 60:.1f} min'


def test_paper_section_puts_the_papers_numbers_beside_ours():
  config = {
    'teacher': {'arch': 'wrn_40_2'},
    'distill': {'student': 'wrn_40_1'},
    'data': {'name': 'cifar100'},
  }
  rows = [
    dict(
      kind='student',
      teacher_choice=c,
      teacher_test_accuracy='',
      last_test_accuracy=a,
      best_test_accuracy=a,
    )
    for c, a in (('none', 0.70), ('selected', 0.72), ('selected', 0.74))
  ]
  section = '\n'.join(report._paper_section(rows, config))
  assert _cells(section, 'none') == ['none', '70.38', '70.00 ± 0.00']
  assert _cells(section, 'selected') == ['selected', '73.26', '73.00 ± 1.41']
  assert _cells(section, 'epoch:60') == ['epoch:60', '72.34', '–']
  config['data']['name'] = 'cifar10'
  assert 'reports no numbers for wrn_40_2 → wrn_40_1 on cifar10' in '\n'.join(
    report._paper_section(rows, config)
  )
