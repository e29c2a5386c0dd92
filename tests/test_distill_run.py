"""The distill stage end to end on a tiny offline config, and its refusals of bad input."""

import functools
import json
import shutil

import jax
import numpy as np
import pipeline_configs
import pytest
from run_records import counted_traces, untimed_records

from ckd_jax import pipeline
from ckd_jax.checkpoints import SnapshotStore
from ckd_jax.data import load_dataset
from ckd_jax.models import get_model
from ckd_jax.stages.distill import check_members
from ckd_jax.stages.teacher_choices import parse, parse_all
from ckd_jax.workdir.layout import student_run_dir, teacher_run_dir

CHOICES = ('epoch:1', 'final', 'snapshot_ensemble:1,2', 'full_ensemble:2', 'none')


def tiny_config(choices=CHOICES, **distill):
  return pipeline_configs.tiny_config(
    train=128,
    test=96,
    eval_batch=48,
    teacher_seeds=2,
    choices=choices,
    stages='teacher,distill',
    **distill,
  )


@pytest.fixture(scope='module')
def workdir(tmp_path_factory):
  workdir = tmp_path_factory.mktemp('distill')
  pipeline.run(tiny_config(), workdir)
  return workdir


def _final(path):
  return json.loads((path / 'final.json').read_text())


def _student_final(workdir, spec):
  return _final(student_run_dir(workdir, 'resnet8_b', parse(spec, tiny_config().teacher).slug, 0))


def test_every_choice_has_a_student_with_labelled_results(workdir, capsys):
  for spec in CHOICES:
    final = _student_final(workdir, spec)
    assert final['teacher_choice'] == spec and final['epochs'] == 2
    assert 0 <= final['last_test_accuracy'] <= final['best_test_accuracy'] <= 1
  assert 'teacher_test_accuracy' not in _student_final(workdir, 'none')
  members = _student_final(workdir, 'full_ensemble:2')['teacher_members']
  assert [(m['seed'], m['epoch']) for m in members] == [(0, 2), (1, 2)]
  pipeline.run(tiny_config(), workdir)  # everything done: only the summary is printed again
  out = capsys.readouterr().out
  assert 'snapshot_ensemble:1,2' in out and 'KD beat the no-KD baseline' in out


def test_the_stage_again_in_this_process_traces_nothing_and_trains_the_same_students(
  workdir, tmp_path
):
  """The students' programs (CE and KD steps, the teachers' targets, the ensembles' evaluation,
  the data cuts) are built once per settings in a process (`training.built_once`): the stage run
  again on the same teachers traces nothing, and every student ends with the same records."""
  again = tmp_path / 'again'
  shutil.copytree(workdir, again, ignore=shutil.ignore_patterns('students'))
  with counted_traces() as traces:
    pipeline.run(tiny_config(), again)
  assert traces == []
  for spec in CHOICES:
    slug = parse(spec, tiny_config().teacher).slug
    records = [untimed_records(student_run_dir(w, 'resnet8_b', slug, 0)) for w in (workdir, again)]
    assert records[0] == records[1] and len(records[0]) == 2, spec


def test_teacher_accuracy_recorded_for_a_single_snapshot_is_its_own(workdir):
  teacher0 = teacher_run_dir(workdir, 'resnet8_b', 0)
  assert _student_final(workdir, 'final')['teacher_test_accuracy'] == pytest.approx(
    _final(teacher0)['last_test_accuracy'], abs=1e-6
  )
  first_epoch = json.loads((teacher0 / 'metrics.jsonl').read_text().splitlines()[0])
  assert _student_final(workdir, 'epoch:1')['teacher_test_accuracy'] == pytest.approx(
    first_epoch['test_accuracy'], abs=1e-6
  )


def test_missing_snapshot_is_refused_before_any_student_trains(workdir, tmp_path):
  copy = tmp_path / 'work'
  shutil.copytree(workdir, copy)
  shutil.rmtree(copy / 'students')
  shutil.rmtree(teacher_run_dir(copy, 'resnet8_b', 0) / 'snapshots' / '1')
  config = tiny_config()
  config.stages = 'distill'  # (the teacher stage would recreate the snapshot)
  with pytest.raises(ValueError, match="'epoch:1' needs the snapshot of epoch 1"):
    pipeline.run(config, copy)
  assert not (copy / 'students').exists()


def test_class_count_mismatch_is_refused(workdir):
  config = tiny_config()
  choice = parse('final', config.teacher)
  members = [(teacher_run_dir(workdir, 'resnet8_b', 0), 2)]
  with pytest.raises(ValueError, match='with 10 classes, but .* expects a resnet8_b with 100'):
    check_members(choice, members, 'resnet8_b', 100)
  with pytest.raises(ValueError, match='is a resnet8_b'):
    check_members(choice, members, 'resnet20', 10)


@pytest.mark.parametrize(
  'choices,distill,message',
  [
    (('epoch:3',), {}, 'no snapshot is kept at epoch 3'),
    (('full_ensemble:0',), {}, 'at least one teacher'),
    (('full_ensemble:3',), {}, 'needs 3 teacher seeds'),
    (('snapshot_ensemble:',), {}, 'bad teacher choice'),
    (('epoch:x',), {}, 'integers'),
    (('final', 'final'), {}, 'twice'),
    (('selected:3',), {}, 'bad teacher choice'),
    (('final',), {'alpha': 1.5}, 'alpha'),
    (('final',), {'temperature': 0.0}, 'temperature'),
    (('final',), {'ensemble_mode': 'vote'}, 'ensemble_mode'),
    (('final',), {'kd_until_epoch': 5}, 'kd_until_epoch'),
    (('final',), {'student': 'resnet_nope'}, 'Unknown model'),
  ],
)
def test_bad_distill_configs_are_refused_before_training(tmp_path, choices, distill, message):
  with pytest.raises(ValueError, match=message):
    pipeline.run(tiny_config(choices, **distill), tmp_path)
  assert not (tmp_path / 'teachers').exists()


def test_choice_slugs_are_file_names(workdir):
  teacher = tiny_config().teacher
  slugs = [c.slug for c in parse_all(CHOICES, teacher)]
  assert slugs == ['epoch1', 'final', 'snapshot_ensemble_1_2', 'full_ensemble_2', 'none']
  assert sorted(p.name for p in (workdir / 'students').iterdir()) == sorted(
    f'resnet8_b_from_{slug}_seed0' for slug in slugs
  )


def _numpy_accuracy(workdir, members, data):
  """Each member applied alone, softmax probabilities averaged (the 'probs' mode), argmax against
  the test labels of `data`; members = [(seed, epoch)]."""
  dataset = load_dataset(data)
  model = get_model('resnet8_b', dataset.num_classes)
  images = (dataset.test.images / 255.0 - np.asarray(dataset.mean)) / np.asarray(dataset.std)
  apply = jax.jit(functools.partial(model.apply, train=False))  # one program, not one per op
  probs = []
  for seed, epoch in members:
    variables, _ = SnapshotStore(teacher_run_dir(workdir, 'resnet8_b', seed)).restore(epoch)
    logits = np.asarray(apply(variables, images.astype(np.float32)), np.float64)
    e = np.exp(logits - logits.max(-1, keepdims=True))
    probs.append(e / e.sum(-1, keepdims=True))
  return np.mean(np.argmax(np.mean(probs, 0), -1) == dataset.test.labels)


def test_ensemble_teacher_accuracy_equals_an_independent_computation(workdir):
  expected = _numpy_accuracy(workdir, [(0, 2), (1, 2)], tiny_config().data)
  assert _student_final(workdir, 'full_ensemble:2')['teacher_test_accuracy'] == pytest.approx(
    expected, abs=1e-6
  )


def test_a_snapshot_recorded_on_another_test_split_is_measured_again(workdir, tmp_path):
  """The data config changed after the teachers (64 of the 96 test images): the accuracy recorded
  with the snapshot is not this split's, so the student's record has the one measured now."""
  copy = tmp_path / 'work'
  shutil.copytree(workdir, copy)
  shutil.rmtree(copy / 'students')
  config = tiny_config(choices=('final',))
  config.stages, config.data.test_examples = 'distill', 64
  pipeline.run(config, copy, allow_config_change=True)
  recorded = _final(teacher_run_dir(workdir, 'resnet8_b', 0))['last_test_accuracy']
  measured = _student_final(copy, 'final')['teacher_test_accuracy']
  assert measured == pytest.approx(_numpy_accuracy(workdir, [(0, 2)], config.data), abs=1e-6)
  assert measured != pytest.approx(recorded, abs=1e-6)  # (so the check can fail)


def test_an_empty_choice_list_is_refused(tmp_path):
  with pytest.raises(ValueError, match='non-empty tuple'):
    pipeline.run(tiny_config(choices=()), tmp_path)


def test_the_report_alone_ignores_distill_choices_it_cannot_parse(workdir, tmp_path):
  copy = tmp_path / 'work'
  shutil.copytree(workdir, copy)
  config = tiny_config(choices=CHOICES + ('epoch:nope',))
  config.stages = 'report'
  pipeline.run(config, copy, allow_config_change=True)
  assert '| snapshot_ensemble:1,2 |' in (copy / 'report.md').read_text()


def test_vectorised_students_train_as_when_alone(workdir, tmp_path):
  """Students in 2 vmapped programs (teachers of 1 and of 2 members), against the same students
  one at a time. Without crop padding the trajectories are smooth (pipeline_configs.py's
  split_smooth_teacher_config says why), so the records agree to float rounding."""
  choices = ('epoch:1', 'final', 'snapshot_ensemble:1,2', 'full_ensemble:2')
  records = {}
  for vectorize in (False, True):
    copy = tmp_path / str(vectorize)
    shutil.copytree(workdir, copy)
    shutil.rmtree(copy / 'students')
    config = tiny_config(choices)
    config.stages, config.data.crop_padding, config.distill.vectorize = 'distill', 0, vectorize
    pipeline.run(config, copy, allow_config_change=True)
    records[vectorize] = {
      spec: [
        json.loads(line)
        for line in (
          student_run_dir(copy, 'resnet8_b', parse(spec, config.teacher).slug, 0) / 'metrics.jsonl'
        )
        .read_text()
        .splitlines()
      ]
      for spec in choices
    }
  for spec in choices:
    for got, want in zip(records[True][spec], records[False][spec], strict=True):
      assert got['train_loss'] == pytest.approx(want['train_loss'], rel=1e-5), spec
      assert got['test_accuracy'] == want['test_accuracy'], spec
  # The check can fail: each student learnt from its own teachers.
  losses = {spec: records[True][spec][-1]['train_loss'] for spec in choices}
  assert len({round(v, 4) for v in losses.values()}) == len(choices)
