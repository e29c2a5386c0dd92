"""The select stage end to end: mi.json, mi.png, T* used by the distill stage, refusals."""

import json
import re
import shutil

import jax
import numpy as np
import pipeline_configs
import pytest
from run_records import untimed_records

from ckd_jax import mi, pipeline
from ckd_jax.checkpoints import SnapshotStore
from ckd_jax.stages import select
from ckd_jax.workdir.layout import teacher_run_dir


def tiny_config(stages='teacher,select', **select):
  select_settings = dict(
    method='variational',
    feature='penultimate',  # what these tests were written for (the default reads the logits)
    num_samples=0,
    fit_samples=256,
    batch_size=64,
    variational=dict(
      seed=0,
      probe=dict(steps=100, batch_size=64, learning_rate=1e-2),
      decoder=dict(hidden=32, steps=100, batch_size=64, learning_rate=1e-2, pixel_noise_std=0.1),
    ),
  )
  select_settings.update(select)
  return pipeline_configs.tiny_config(
    train=256,
    test=120,
    eval_batch=40,
    epochs=3,
    milestones=(2,),
    student_epochs=1,
    choices=('selected',),
    select=select_settings,
    stages=stages,
  )


@pytest.fixture(scope='module')
def workdir(tmp_path_factory):
  workdir = tmp_path_factory.mktemp('select')
  pipeline.run(tiny_config(), workdir)
  return workdir


def _mi_json(workdir):
  return json.loads((workdir / 'selection' / 'mi.json').read_text())


def test_mi_json_records_every_snapshot_and_the_choice(workdir):
  result = _mi_json(workdir)
  snaps = result['snapshots']
  assert [s['epoch'] for s in snaps] == [1, 2, 3]
  store = SnapshotStore(teacher_run_dir(workdir, 'resnet8_b', 0))
  for s in snaps:
    assert s['teacher_test_accuracy'] == store.metadata(s['epoch'])['test_accuracy']
    assert 0 <= s['I_XF_normalized'] <= 1 and 0 <= s['I_YF_normalized'] <= 1
    assert s['score'] == pytest.approx(s['I_XF_normalized'] + s['I_YF_normalized'])
  assert result['chosen_epoch'] == snaps[int(np.argmax([s['score'] for s in snaps]))]['epoch']
  assert result['estimator']['method'] == 'variational' and result['units'] == 'nats'
  assert result['estimator']['settings']['probe']['steps'] == 100
  # the default split: 256 training images, the first 128 fit the probes, the other 128 evaluate
  assert result['estimator']['split'] == 'train' and result['estimator']['num_samples'] == 128
  png = (workdir / 'selection' / 'mi.png').read_bytes()
  assert png[:8] == b'\x89PNG\r\n\x1a\n' and len(png) > 10_000


def test_rerun_skips_the_finished_selection(workdir):
  path = workdir / 'selection' / 'mi.json'
  before = path.stat().st_mtime_ns
  pipeline.run(tiny_config(), workdir)
  assert path.stat().st_mtime_ns == before


def test_distill_from_selected_uses_the_chosen_epoch(workdir):
  pipeline.run(tiny_config('teacher,select,distill'), workdir)
  final = json.loads(
    next((workdir / 'students').glob('*_from_selected_seed0/final.json')).read_text()
  )
  assert [m['epoch'] for m in final['teacher_members']] == [_mi_json(workdir)['chosen_epoch']]


def test_selected_without_a_selection_is_refused(workdir, tmp_path):
  copy = tmp_path / 'work'
  shutil.copytree(workdir, copy)
  shutil.rmtree(copy / 'selection')
  shutil.rmtree(copy / 'students', ignore_errors=True)
  (copy / 'config.json').unlink()
  with pytest.raises(ValueError, match='run the select stage first'):
    pipeline.run(tiny_config('teacher,distill'), copy)
  assert not (copy / 'config.json').exists()  # refused before anything was written


def test_selection_before_any_snapshot_is_refused(tmp_path):
  with pytest.raises(ValueError, match='run the teacher stage first'):
    pipeline.run(tiny_config('select'), tmp_path)


def test_snapshot_of_another_architecture_is_refused(workdir, tmp_path):
  copy = tmp_path / 'work'
  shutil.copytree(teacher_run_dir(workdir, 'resnet8_b', 0), teacher_run_dir(copy, 'resnet20', 0))
  config = tiny_config('select')
  config.teacher.arch = 'resnet20'
  with pytest.raises(ValueError, match='is a resnet8_b'):
    pipeline.run(config, copy)


@pytest.mark.parametrize(
  'change,message',
  [
    (dict(method='mine'), 'select.method'),
    (dict(method='kde,kde'), 'twice'),
    (dict(normalization='zscore'), 'normalization'),
    (dict(weights=(0.0, 0.0)), 'weights'),
    (dict(feature='conv3'), 'feature'),
  ],
)
def test_bad_select_configs_are_refused_before_compute(tmp_path, change, message):
  with pytest.raises(ValueError, match=message):
    pipeline.run(tiny_config(**change), tmp_path)
  assert not (tmp_path / 'teachers').exists()


def _copy(workdir, tmp_path):
  copy = tmp_path / 'work'
  shutil.copytree(workdir, copy)
  return copy


def test_select_refuses_an_unfinished_teacher_or_a_missing_snapshot(workdir, tmp_path):
  copy = _copy(workdir, tmp_path)
  shutil.rmtree(copy / 'selection')
  run = teacher_run_dir(copy, 'resnet8_b', 0)
  shutil.rmtree(run / 'snapshots' / '2')
  with pytest.raises(ValueError, match=r'snapshots of epochs \[2\] .* which are missing'):
    pipeline.run(tiny_config('select'), copy)
  (run / 'final.json').unlink()  # as if killed after its first snapshots
  with pytest.raises(ValueError, match='needs the finished teacher run .* run the teacher stage'):
    pipeline.run(tiny_config('select'), copy)
  assert not (copy / 'selection').exists()


def test_a_changed_snapshot_makes_the_selection_and_its_students_stale(workdir, tmp_path, capsys):
  pipeline.run(tiny_config('teacher,select,distill'), workdir)
  copy = _copy(workdir, tmp_path)
  store = SnapshotStore(teacher_run_dir(copy, 'resnet8_b', 0))
  chosen = _mi_json(copy)['chosen_epoch']
  variables, meta = store.restore(chosen)
  noisy = jax.tree.map(lambda x: x * 1.01, variables)
  store.save(chosen, noisy, {k: v for k, v in meta.items() if k not in ('digest', 'arrays_digest')})
  capsys.readouterr()
  pipeline.run(tiny_config('teacher,select,distill'), copy)
  out = capsys.readouterr().out
  assert 'is stale (its snapshots or settings changed): recomputing' in out
  assert 'from_selected_seed0 is stale (its teacher snapshots changed)' in out
  new = _mi_json(copy)
  assert (
    new['inputs']['snapshot_digests'][f'resnet8_b_seed0@{chosen}']
    == store.metadata(chosen)['digest']
    != _mi_json(workdir)['inputs']['snapshot_digests'][f'resnet8_b_seed0@{chosen}']
  )
  final = json.loads(next((copy / 'students').glob('*_from_selected_seed0/final.json')).read_text())
  member = SnapshotStore(teacher_run_dir(copy, 'resnet8_b', 0)).metadata(new['chosen_epoch'])
  assert final['teacher_members'][0]['digest'] == member['digest']


def test_other_test_images_make_the_selection_stale(workdir, tmp_path, capsys):
  """The estimators see the test split: after a change of data.test_examples a 'selected' student
  is refused, and the select stage computes the selection again, saying that the snapshots'
  recorded accuracies are another split's."""
  copy = _copy(workdir, tmp_path)
  config = tiny_config('distill')
  config.data.test_examples = 48
  with pytest.raises(ValueError, match="is stale .* so 'selected' cannot use it"):
    pipeline.run(config, copy, allow_config_change=True)
  config.stages = 'select'
  capsys.readouterr()
  pipeline.run(config, copy, allow_config_change=True)
  out = capsys.readouterr().out
  assert 'is stale (its snapshots or settings changed): recomputing' in out
  assert (
    'warning: the teacher accuracies shown were measured when the snapshots were saved, not '
    'on the test split that the MI is estimated on'
  ) in out
  assert _mi_json(copy)['inputs']['data']['test_examples'] == 48


def test_a_deleted_snapshot_is_recreated_identically_and_nothing_else_reruns(
  workdir, tmp_path, capsys
):
  copy = _copy(workdir, tmp_path)
  run = teacher_run_dir(copy, 'resnet8_b', 0)
  before = SnapshotStore(run).metadata(2)['digest']
  selection_time = (copy / 'selection' / 'mi.json').stat().st_mtime_ns
  shutil.rmtree(run / 'snapshots' / '2')
  capsys.readouterr()
  pipeline.run(tiny_config(), copy)
  assert 'snapshots of epochs [2] are missing; training it again' in capsys.readouterr().out
  assert SnapshotStore(run).metadata(2)['digest'] == before
  assert (copy / 'selection' / 'mi.json').stat().st_mtime_ns == selection_time


def test_a_saturated_estimate_is_flagged_on_the_console_in_mi_json_and_in_the_report(
  workdir, tmp_path, capsys
):
  copy = _copy(workdir, tmp_path)
  config = tiny_config('select,report', method='kde')
  config.select.kde.noise_variance = '1e-6'  # every sample alone in its kernel
  pipeline.run(config, copy, allow_config_change=True)
  out = capsys.readouterr().out
  assert 'warning: I(X;F) is saturated' in out and 'warning: I(Y;F) is saturated' in out
  assert 'warning: the top score is tied between epochs [1, 2, 3]' in out
  result = _mi_json(copy)
  assert len(_estimate_warnings(result)) == 3 and result['chosen_epoch'] == 1
  assert all(s['noise_variance'] == pytest.approx(1e-6) for s in result['snapshots'])
  assert '**Warning:** I(X;F) is saturated' in (copy / 'report.md').read_text()


@pytest.fixture(scope='module')
def kde_alone(workdir, tmp_path_factory):
  """mi.json of the select stage with `method='kde'` and its defaults."""
  copy = tmp_path_factory.mktemp('kde') / 'work'
  shutil.copytree(workdir, copy)
  pipeline.run(tiny_config('select', method='kde'), copy, allow_config_change=True)
  return _mi_json(copy)


def _estimate_warnings(result):
  """mi.json's warnings about the estimate, without the weak-teacher one (the tiny teachers'
  early snapshots are far weaker than their last: it may fire; tested on its own below)."""
  return [w for w in result['warnings'] if not w.startswith('T* (epoch')]


def test_the_default_kde_is_not_flat_on_real_snapshots(kde_alone):
  flat = [w for w in kde_alone['warnings'] if 'saturated' in w or 'tied' in w]
  assert flat == [], kde_alone['warnings']
  assert len({round(s['I_YF'], 4) for s in kde_alone['snapshots']}) == 3
  assert all(s['noise_variance'] > 0 for s in kde_alone['snapshots'])


def test_several_estimators_are_compared_on_the_same_snapshots(
  workdir, kde_alone, tmp_path, capsys
):
  copy = _copy(workdir, tmp_path)
  config = tiny_config('select,report', method='kde,binning')
  config.select.binning.num_bins = 4  # coarse enough not to saturate on 120 samples
  capsys.readouterr()
  pipeline.run(config, copy, allow_config_change=True)
  out = capsys.readouterr().out
  result = _mi_json(copy)
  kde, binning = result['estimators']['kde'], result['estimators']['binning']
  # The first estimator decides and equals kde run alone (features extracted once for both).
  assert result['chosen_epoch'] == kde['chosen_epoch'] == kde_alone['chosen_epoch']
  assert result['snapshots'] == kde['snapshots']
  for together, alone in zip(kde['snapshots'], kde_alone['snapshots']):
    assert together == pytest.approx(alone, rel=1e-6)
  assert binning['estimator'] == {
    'method': 'binning',
    'feature': 'penultimate',
    'split': 'train',
    'num_samples': 128,
    'settings': {'num_bins': 4},
    'fit_samples': 0,
  }
  comparison = result['comparison']
  assert comparison['methods'] == ['kde', 'binning'] and comparison['decides'] == 'kde'
  assert comparison['chosen_epochs'] == {
    'kde': kde['chosen_epoch'],
    'binning': binning['chosen_epoch'],
  }
  [pair] = comparison['rank_correlation']
  for key in ('I_XF', 'I_YF', 'score'):
    expected = mi.rank_correlation(
      [s[key] for s in kde['snapshots']], [s[key] for s in binning['snapshots']]
    )
    assert pair[key] == expected and (expected is None or -1 <= expected <= 1)
  disagree = kde['chosen_epoch'] != binning['chosen_epoch']
  assert any('the estimators disagree on T*' in w for w in result['warnings']) == disagree
  assert all(f'binning: {w}' in result['warnings'] for w in binning['warnings'])
  report = (copy / 'report.md').read_text()
  assert '### Estimators compared on the same snapshots' in report
  assert f'| binning | {binning["chosen_epoch"]} |' in report and '| kde vs binning |' in report
  assert re.search(r'\nestimator +T\* +T\* in repeats', out) and '\nkde vs binning ' in out


def test_repeats_give_an_uncertainty_and_the_stability_of_t_star(workdir):
  result = _mi_json(workdir)
  repeats = result['repeats']
  assert (
    repeats['count'] == 5 and repeats['subsample'] == 0.5 and len(repeats['chosen_epochs']) == 5
  )
  assert sum(s['chosen_in_repeats'] for s in result['snapshots']) == 5
  assert all(s['I_YF_std'] > 0 and s['I_XF_std'] > 0 for s in result['snapshots'])
  assert repeats['stability'].startswith(f'epoch {result["chosen_epoch"]} chosen in ')
  unstable = set(repeats['chosen_epochs']) != {result['chosen_epoch']}
  assert any(w.startswith('T* is not stable') for w in result['warnings']) == unstable


def test_distill_refuses_a_stale_selection_without_the_select_stage(workdir, tmp_path):
  copy = _copy(workdir, tmp_path)
  store = SnapshotStore(teacher_run_dir(copy, 'resnet8_b', 0))
  variables, meta = store.restore(2)
  store.save(
    2,
    jax.tree.map(lambda x: x * 1.01, variables),
    {k: v for k, v in meta.items() if k not in ('digest', 'arrays_digest')},
  )
  shutil.rmtree(copy / 'students', ignore_errors=True)
  with pytest.raises(ValueError, match="mi.json is stale .* 'selected' cannot use it"):
    pipeline.run(tiny_config('distill'), copy)
  assert not (copy / 'students').exists()


def test_a_bound_below_zero_is_clamped_and_flagged_on_the_console_in_mi_json_and_the_report(
  workdir, tmp_path, capsys
):
  """A decoder with a learning rate too small for its budget does worse than the mean image: the
  lower bound is below zero at every snapshot, so it is no estimate."""
  copy = _copy(workdir, tmp_path)
  config = tiny_config('select,report')
  config.select.variational.decoder.learning_rate = 1e-5
  pipeline.run(config, copy, allow_config_change=True)
  out = capsys.readouterr().out
  assert (
    'warning: I(X;F) is below zero (a lower bound, so no estimate) at 3 snapshot(s): the '
    'decoder reconstructs held-out images worse than the mean image; clamped to 0 for the '
    'score'
  ) in out
  result = _mi_json(copy)
  assert any('I(X;F) is below zero' in w for w in result['warnings'])
  for s in result['snapshots']:
    assert s['I_XF'] == 0.0 and s['I_XF_raw'] < 0 and s['I_XF_normalized'] == 0.0
    assert 'I_YF_raw' not in s and s['I_YF'] > 0
  assert '**Warning:** I(X;F) is below zero' in (copy / 'report.md').read_text()


def test_the_default_selection_reads_no_test_image(workdir):
  """split='train': the estimates are the same whatever the test split holds, and the probes'
  fitting and evaluation images are disjoint training images."""
  from ckd_jax.data import Dataset, Split, load_dataset

  config = tiny_config()
  dataset = load_dataset(config.data)
  scrambled = Dataset(
    dataset.name,
    dataset.train,
    Split(255 - dataset.test.images, (dataset.test.labels + 1) % 10),
    dataset.num_classes,
    dataset.mean,
    dataset.std,
  )
  sc = config.select
  fit, evaluation = mi.selection_samples(dataset, 'train', sc.num_samples, sc.fit_samples)
  assert len(fit) == len(evaluation) == 128
  np.testing.assert_array_equal(
    np.concatenate([fit.images, evaluation.images]), dataset.train.images
  )
  np.testing.assert_array_equal(
    mi.selection_labels(dataset, 'train', 0, sc.fit_samples), evaluation.labels
  )
  from ckd_jax.checkpoints import restore_snapshots
  from ckd_jax.models import get_model

  stacked, _ = restore_snapshots(teacher_run_dir(workdir, 'resnet8_b', 0), [1, 3])
  model = get_model('resnet8_b', 10)
  settings = {'kde': sc.kde.to_dict(), 'binning': sc.binning.to_dict()}
  ours, theirs = (
    mi.compare_over_snapshots(
      stacked, model, d, settings, num_samples=0, fit_samples=sc.fit_samples, batch_size=64
    )
    for d in (dataset, scrambled)
  )
  for method in settings:
    for key in ('I_XF', 'I_YF'):
      np.testing.assert_array_equal(ours[method][key], theirs[method][key])
  on_test = mi.compare_over_snapshots(
    stacked,
    model,
    dataset,
    {'kde': settings['kde']},
    num_samples=0,
    fit_samples=sc.fit_samples,
    batch_size=64,
    split='test',
  )
  assert not np.array_equal(on_test['kde']['I_YF'], ours['kde']['I_YF'])


def test_a_damaged_selection_is_recomputed_by_the_select_stage_and_named_by_distill(
  workdir, tmp_path, capsys
):
  copy = _copy(workdir, tmp_path)
  path = copy / 'selection' / 'mi.json'
  good = json.loads(path.read_text())
  path.write_text(path.read_text()[:50])  # torn
  with pytest.raises(ValueError, match=r'mi.json is damaged \(.*\): rerun the select stage'):
    pipeline.run(tiny_config('distill'), copy)
  capsys.readouterr()
  pipeline.run(tiny_config('select'), copy)
  assert f'selection {path} is damaged: recomputing it' in capsys.readouterr().out
  assert _mi_json(copy)['chosen_epoch'] == good['chosen_epoch']


def _selection(chosen, accuracies, chosen_epochs):
  return {
    'chosen_epoch': chosen,
    'repeats': {'chosen_epochs': chosen_epochs},
    'snapshots': [
      {'epoch': e, 'teacher_test_accuracy': a} for e, a in zip((10, 20, 30), accuracies)
    ],
  }


def test_a_certain_choice_of_a_far_weaker_teacher_is_flagged():
  """T* 20 points below the final snapshot, all repeats agreeing: flagged; 3 points
  below, T* = final, or repeats that disagree (already a warning of their own): not."""
  weak = select.weak_teacher_warning(_selection(10, (0.40, 0.55, 0.60), [10, 10, 10]))
  assert weak.startswith(
    'T* (epoch 10) is a teacher 20.0 points of test accuracy below the final '
    'snapshot (epoch 30), and every repeat chose it'
  )
  assert select.weak_teacher_warning(_selection(10, (0.57, 0.55, 0.60), [10, 10])) is None
  assert select.weak_teacher_warning(_selection(30, (0.40, 0.55, 0.60), [30, 30])) is None
  assert select.weak_teacher_warning(_selection(10, (0.40, 0.55, 0.60), [10, 20])) is None


def test_students_of_selected_are_copied_from_the_same_snapshots_students(
  workdir, tmp_path, capsys
):
  """`selected` = `epoch:E`: one student is trained, the other copied (final.json names the
  choice and the source); training `selected` alone gives the same records, so the copy is what
  training would have given."""
  chosen = _mi_json(workdir)['chosen_epoch']

  def distill(choices):
    copy = _copy(workdir, tmp_path / '_'.join(c.replace(':', '') for c in choices))
    shutil.rmtree(copy / 'students', ignore_errors=True)  # (an earlier test's students)
    config = tiny_config('distill')
    config.distill.teachers = choices
    pipeline.run(config, copy, allow_config_change=True)
    return copy / 'students'

  both = distill((f'epoch:{chosen}', 'selected'))
  assert 'copied' in capsys.readouterr().out
  copied = json.loads((both / 'resnet8_b_from_selected_seed0' / 'final.json').read_text())
  trained = json.loads((both / f'resnet8_b_from_epoch{chosen}_seed0' / 'final.json').read_text())
  assert copied['teacher_choice'] == 'selected' and copied['copied_from'].endswith(
    f'resnet8_b_from_epoch{chosen}_seed0'
  )
  assert {k: v for k, v in copied.items() if k not in ('teacher_choice', 'copied_from')} == (
    {k: v for k, v in trained.items() if k != 'teacher_choice'}
  )
  # A kill between the copy of the files and its final.json: the rerun copies it again.
  (both / 'resnet8_b_from_selected_seed0' / 'final.json').unlink()
  config = tiny_config('distill')
  config.distill.teachers = (f'epoch:{chosen}', 'selected')
  pipeline.run(config, both.parent, allow_config_change=True)
  assert 'copied' in capsys.readouterr().out
  assert json.loads((both / 'resnet8_b_from_selected_seed0' / 'final.json').read_text()) == copied
  alone = distill(('selected',))
  assert untimed_records(alone / 'resnet8_b_from_selected_seed0') == untimed_records(
    both / 'resnet8_b_from_selected_seed0'
  )


def test_infopro_records_the_spatial_map_it_reads(workdir, tmp_path):
  """select.feature says 'penultimate'; infopro reads the spatial map, and mi.json says so."""
  copy = _copy(workdir, tmp_path)
  config = tiny_config(
    'select',
    method='infopro,kde',
    infopro=dict(
      seed=0,
      probe=dict(steps=20, batch_size=64, learning_rate=1e-2),
      decoder=dict(hidden=16, steps=20, batch_size=64, learning_rate=1e-3),
    ),
  )
  pipeline.run(config, copy, allow_config_change=True)
  result = _mi_json(copy)
  assert result['estimator']['method'] == 'infopro'
  assert result['estimator']['feature'] == 'spatial'
  assert result['estimators']['kde']['estimator']['feature'] == 'penultimate'
  assert all(np.isfinite(s['I_XF']) and s['I_XF'] >= 0 for s in result['snapshots'])
