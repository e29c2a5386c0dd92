"""Snapshots: round trip, stacking, and refusal of damaged or mismatched snapshots."""

import json
import pathlib

import chex
import jax
import numpy as np
import pytest

from ckd_jax import checkpoints
from ckd_jax.checkpoints import SnapshotError, SnapshotStore, restore_snapshots


def _variables(seed, width=4):
  rng = np.random.default_rng(seed)
  return {
    'params': {
      'dense': {
        'kernel': rng.normal(size=(3, width)).astype(np.float32),
        'bias': rng.normal(size=(width,)).astype(np.float32),
      }
    },
    'batch_stats': {'bn': {'mean': rng.normal(size=(width,)).astype(np.float32)}},
  }


@pytest.fixture
def run_dir(tmp_path):
  store = SnapshotStore(tmp_path)
  for epoch in (2, 4, 6):
    store.save(epoch, _variables(epoch), {'arch': 'toy'})
  return tmp_path


def test_round_trip_and_metadata(run_dir):
  variables, meta = SnapshotStore(run_dir).restore(4, _variables(0))
  chex.assert_trees_all_equal(variables, _variables(4))
  assert meta['epoch'] == 4 and meta['arch'] == 'toy'
  assert meta['digest'] == checkpoints.metadata_digest(meta) and len(meta['arrays_digest']) == 64
  assert SnapshotStore(run_dir).epochs() == [2, 4, 6]


def test_restore_snapshots_stacks_along_a_leading_axis(run_dir):
  stacked, metas = restore_snapshots(run_dir, [6, 2])
  assert [m['epoch'] for m in metas] == [6, 2]
  for i, epoch in enumerate([6, 2]):
    chex.assert_trees_all_equal(jax.tree.map(lambda s: s[i], stacked), _variables(epoch))


def _largest_file(directory):
  files = [p for p in pathlib.Path(directory).rglob('*') if p.is_file()]
  return max(files, key=lambda p: p.stat().st_size)


def test_a_flipped_byte_is_refused_naming_the_snapshot(run_dir):
  target = _largest_file(run_dir / 'snapshots' / '4' / 'variables')
  data = bytearray(target.read_bytes())
  data[len(data) // 2] ^= 0x01
  target.write_bytes(bytes(data))
  with pytest.raises(SnapshotError, match='snapshots/4'):
    SnapshotStore(run_dir).restore(4, _variables(0))
  SnapshotStore(run_dir).restore(2, _variables(0))  # the others are untouched


def test_a_missing_file_is_refused_naming_the_snapshot(run_dir):
  _largest_file(run_dir / 'snapshots' / '6' / 'variables').unlink()
  with pytest.raises(SnapshotError, match='snapshots/6'):
    SnapshotStore(run_dir).restore(6, _variables(0))


def test_missing_epoch_and_other_architecture_are_refused(run_dir):
  with pytest.raises(SnapshotError, match='no snapshot of epoch 5.*available: \\[2, 4, 6\\]'):
    restore_snapshots(run_dir, [2, 5])
  SnapshotStore(run_dir).save(8, _variables(8, width=5), {'arch': 'wider'})
  with pytest.raises(SnapshotError, match='different architecture'):
    restore_snapshots(run_dir, [2, 8])
  with pytest.raises(SnapshotError, match='at least one snapshot'):
    restore_snapshots(run_dir, [])


def test_digest_depends_on_values_and_names():
  a = _variables(0)
  b = jax.tree.map(np.copy, a)
  assert checkpoints.tree_digest(a) == checkpoints.tree_digest(b)
  b['params']['dense']['bias'][0] += 1e-6
  assert checkpoints.tree_digest(a) != checkpoints.tree_digest(b)
  renamed = {'params': {'dense2': a['params']['dense']}, 'batch_stats': a['batch_stats']}
  assert checkpoints.tree_digest(a) != checkpoints.tree_digest(renamed)


def _train_state(seed):
  import optax

  from ckd_jax.training import TrainState

  variables = _variables(seed)
  state = TrainState.create(
    apply_fn=None,
    params=variables['params'],
    tx=optax.sgd(0.1, 0.9),
    batch_stats=variables['batch_stats'],
  )
  return state.replace(step=np.zeros((), np.int32))  # an array step, as create_train_state makes


def test_resume_checkpoint_round_trip_and_a_corrupt_one_is_refused(tmp_path):
  store = checkpoints.ResumeStore(tmp_path)
  state = _train_state(1).replace(step=np.full((), 7, np.int32))
  store.save(state, {'epoch_sums': {'loss': 1.5}})
  restored, extra = checkpoints.ResumeStore(tmp_path).restore(_train_state(0))
  chex.assert_trees_all_equal(restored.params, state.params)
  assert int(restored.step) == 7 and extra == {'epoch_sums': {'loss': 1.5}}

  for chunk in (tmp_path / 'resume' / '7' / 'state').rglob('d/*'):  # the array data files
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0x01
    chunk.write_bytes(bytes(data))
  with pytest.raises(SnapshotError, match='resume checkpoint .*resume/7 .*delete it to restart'):
    checkpoints.ResumeStore(tmp_path).restore(_train_state(0))


def test_edited_metadata_is_refused(run_dir):
  """A changed recorded accuracy (one digit) would silently change tables: the digest covers it."""
  path = run_dir / 'snapshots' / '4' / 'metadata' / 'metadata'
  meta = json.loads(path.read_text())
  meta['test_accuracy'] = 0.9
  path.write_text(json.dumps(meta))
  for read in (lambda s: s.metadata(4), lambda s: s.restore(4, _variables(0))):
    with pytest.raises(SnapshotError, match='snapshots/4 is corrupt: its metadata'):
      read(SnapshotStore(run_dir))
  assert SnapshotStore(run_dir).metadata(2)['epoch'] == 2


@pytest.mark.parametrize('damage', ['delete the array data', 'empty _METADATA'])
def test_a_damaged_resume_checkpoint_is_one_clear_error(tmp_path, damage):
  checkpoints.ResumeStore(tmp_path).save(_train_state(1).replace(step=np.full((), 7, np.int32)))
  state_dir = tmp_path / 'resume' / '7' / 'state'
  if damage == 'empty _METADATA':
    (state_dir / '_METADATA').write_text('')
  else:
    for chunk in state_dir.rglob('d/*'):
      chunk.unlink()
  with pytest.raises(
    SnapshotError, match='resume checkpoint .*resume/7 cannot be restored .*delete it to restart'
  ):
    checkpoints.ResumeStore(tmp_path).restore(_train_state(0))


def test_replacing_an_earlier_snapshot_really_writes_it(run_dir):
  """Orbax skips a step below the latest one unless forced: a replaced snapshot must be written."""
  SnapshotStore(run_dir).save(2, _variables(20), {'arch': 'toy'})
  chex.assert_trees_all_equal(SnapshotStore(run_dir).restore(2, _variables(0))[0], _variables(20))
  assert SnapshotStore(run_dir).epochs() == [2, 4, 6]
