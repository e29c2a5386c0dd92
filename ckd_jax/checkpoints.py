"""Orbax checkpoints: permanent teacher snapshots and a rolling resume checkpoint.

Orbax restores a flipped byte in a saved array silently, with wrong values. Every snapshot therefore
carries a SHA-256 digest of its arrays (`arrays_digest`) and a digest of its whole metadata, that
one included (`digest`): reading the metadata verifies the second, restoring verifies both. The
`digest` thus names one snapshot's exact content; later stages record it to know what they used.
"""

import hashlib
import json
import pathlib

import flax
import jax
import numpy as np
import orbax.checkpoint as ocp

from ckd_jax.distributed import primary_only
from ckd_jax.workdir.files import remove_tree
from ckd_jax.workdir.layout import RunFiles


class SnapshotError(ValueError):
  """A snapshot is missing, damaged or does not match what the caller expects."""


_RECREATE = 'delete that folder and rerun the teacher stage, which recreates it'


def _cause(error, limit=240):
  """'Type: message' of an orbax/tensorstore error, cut to its first line and before the
  TensorStore spec that it appends (a few thousand characters of JSON)."""
  text = str(error).strip()
  text = (text.splitlines()[0] if text else '').split(' [tensorstore_spec=')[0]
  return f'{type(error).__name__}: {text[:limit]}{"…" if len(text) > limit else ""}'


def tree_digest(tree):
  """SHA-256 over every leaf's path, dtype, shape and bytes (order-independent of dict order)."""
  digest = hashlib.sha256()
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  for path, leaf in sorted(leaves, key=lambda kv: jax.tree_util.keystr(kv[0])):
    array = np.ascontiguousarray(np.asarray(leaf))
    digest.update(f'{jax.tree_util.keystr(path)}|{array.dtype}|{array.shape}|'.encode())
    digest.update(array.tobytes())
  return digest.hexdigest()


def metadata_digest(metadata):
  """SHA-256 of the metadata (its 'digest' field left out), which holds the arrays' digest."""
  fields = {k: v for k, v in metadata.items() if k != 'digest'}
  return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


def _manager(directory, max_to_keep=None):
  """A manager private to this process: only process 0 saves (the arrays are replicated host
  copies), and Orbax's own multi-process coordination would wait for the others at every call."""
  directory, process = pathlib.Path(directory).absolute(), jax.process_index()
  if process == 0:
    directory.mkdir(parents=True, exist_ok=True)
  options = ocp.CheckpointManagerOptions(
    max_to_keep=max_to_keep,
    create=False,
    enable_async_checkpointing=False,
    multiprocessing_options=ocp.options.MultiprocessingOptions(
      primary_host=process, active_processes={process}
    ),
  )
  return ocp.CheckpointManager(directory, options=options)


def _write(manager, step, directory, args):
  """Saves one checkpoint and waits for it; a failed write (a full disk, a read-only folder) is
  one line naming the folder. Orbax leaves no finished checkpoint behind on failure."""
  try:
    # force: Orbax otherwise skips, silently, a step below the latest one (a replaced snapshot).
    saved = manager.save(step, args=args, force=True)
    manager.wait_until_finished()
  except Exception as e:  # tensorstore reports a full disk as ValueError('RESOURCE_EXHAUSTED …')
    raise SnapshotError(
      f'cannot write {directory / str(step)} ({_cause(e)}); if the disk is full, '
      'free some space and rerun the same command'
    ) from e
  if not saved:
    raise SnapshotError(f'Orbax did not write {directory / str(step)}')


def _abstract(tree):
  return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


class SnapshotStore:
  """`<run_dir>/snapshots/<epoch>/`: {params, batch_stats} + JSON metadata, kept forever."""

  def __init__(self, run_dir):
    self.directory = RunFiles(run_dir).snapshots
    self._manager = _manager(self.directory)

  def epochs(self):
    return sorted(self._manager.all_steps())

  @primary_only
  def save(self, epoch, variables, metadata):
    """Saves (replacing a snapshot of the same epoch left by an interrupted run)."""
    variables = jax.device_get(variables)
    if epoch in self._manager.all_steps():
      self.delete(epoch)
    meta = dict(metadata, epoch=int(epoch), arrays_digest=tree_digest(variables))
    meta['digest'] = metadata_digest(meta)
    _write(
      self._manager,
      epoch,
      self.directory,
      ocp.args.Composite(
        variables=ocp.args.StandardSave(variables), metadata=ocp.args.JsonSave(meta)
      ),
    )

  @primary_only
  def delete(self, epoch):
    self._manager.delete(epoch)

  def metadata(self, epoch):
    """The snapshot's metadata (epoch, test accuracy, arch, …), verified against its digest."""
    self._check_exists(epoch)
    where = self.directory / str(epoch)
    try:
      meta = self._manager.restore(epoch, args=ocp.args.Composite(metadata=ocp.args.JsonRestore()))[
        'metadata'
      ]
    except Exception as e:  # orbax raises many types for missing or corrupt files
      raise SnapshotError(
        f'snapshot {where}: its metadata cannot be read ({_cause(e)}); {_RECREATE}'
      ) from e
    if not isinstance(meta, dict) or meta.get('digest') != metadata_digest(meta):
      raise SnapshotError(
        f'snapshot {where} is corrupt: its metadata does not match the digest '
        f'recorded when it was saved; {_RECREATE}'
      )
    return meta

  def check_fits(self, epoch, arch, num_classes, needed_by):
    """Refuses, before any compute, a snapshot that is missing or is not the expected model.

    `needed_by` says who asked, e.g. "teacher choice 'epoch:60'", for the message.
    """
    if epoch not in self._manager.all_steps():
      raise SnapshotError(
        f'{needed_by} needs the snapshot of epoch {epoch} in '
        f'{self.directory}, which does not exist: run the teacher stage first'
      )
    meta = self.metadata(epoch)
    if meta.get('arch') != arch or meta.get('num_classes') != num_classes:
      raise SnapshotError(
        f'snapshot {self.directory / str(epoch)} is a {meta.get("arch")} with '
        f'{meta.get("num_classes")} classes, but {needed_by} expects a {arch} '
        f'with {num_classes} classes (config.teacher.arch and the dataset)'
      )

  def restore(self, epoch, target=None):
    """Returns (variables, metadata); raises SnapshotError naming the snapshot if it is damaged."""
    self._check_exists(epoch)
    where = self.directory / str(epoch)
    meta = self.metadata(epoch)
    try:
      restore_args = ocp.args.StandardRestore(_abstract(target) if target is not None else None)
      variables = self._manager.restore(epoch, args=ocp.args.Composite(variables=restore_args))[
        'variables'
      ]
    except Exception as e:  # orbax/tensorstore raise many types for missing or corrupt files
      raise SnapshotError(f'snapshot {where} cannot be restored ({_cause(e)}); {_RECREATE}') from e
    if tree_digest(variables) != meta.get('arrays_digest'):
      raise SnapshotError(
        f'snapshot {where} is corrupt: its arrays do not match the digest '
        f'recorded when it was saved; {_RECREATE}'
      )
    return variables, meta

  def _check_exists(self, epoch):
    if epoch not in self._manager.all_steps():
      raise SnapshotError(
        f'no snapshot of epoch {epoch} in {self.directory} (available: {self.epochs() or "none"})'
      )


def snapshot_digests(members):
  """{'<run_dir>@<epoch>': digest} of snapshots [(run_dir, epoch)]: what a result was made from.

  Reads metadata only (cheap); a missing snapshot gives None, so a comparison says "changed".
  """
  digests = {}
  for run_dir, epoch in members:
    store = SnapshotStore(run_dir)
    has = epoch in store.epochs()
    digests[f'{pathlib.Path(run_dir).name}@{epoch}'] = (
      store.metadata(epoch)['digest'] if has else None
    )
  return digests


def restore_snapshots(run_dir, epochs, target=None):
  """Restores several snapshots as ONE pytree whose leaves have a leading snapshot axis.

  This is the input of everything vectorised over checkpoints (MI estimation, ensembles).

  Args:
    run_dir: a teacher run directory (`WORKDIR/teachers/<arch>_seed<k>`).
    epochs: the snapshot epochs to restore, in the order of the stacked axis.
    target: optional pytree with the variables' structure (Orbax restores into it).
  Returns:
    (stacked variables {'params', 'batch_stats'} with leaves (S, …), [metadata dict per epoch]).
  Raises:
    SnapshotError: a snapshot is missing or its digests do not match (the message says how to
      recreate it).
  """
  return restore_stacked([(run_dir, e) for e in epochs], target)


def restore_stacked(members, target=None):
  """Like `restore_snapshots` for snapshots of several runs: members = [(run_dir, epoch), ...]."""
  if not members:
    raise SnapshotError('restoring a stack of snapshots needs at least one snapshot')
  restored = [SnapshotStore(run_dir).restore(epoch, target) for run_dir, epoch in members]
  trees = [v for v, _ in restored]
  structure = jax.tree.structure(trees[0])
  for (run_dir, epoch), tree in zip(members, trees):
    if jax.tree.structure(tree) != structure or any(
      a.shape != b.shape for a, b in zip(jax.tree.leaves(tree), jax.tree.leaves(trees[0]))
    ):
      raise SnapshotError(
        f'snapshot {epoch} of {run_dir} has a different architecture than '
        f'snapshot {members[0][1]} of {members[0][0]}'
      )
  return jax.tree.map(lambda *xs: np.stack(xs), *trees), [m for _, m in restored]


class ResumeStore:
  """`<run_dir>/resume/<step>/`: the full TrainState, one kept; removed when the run finishes."""

  def __init__(self, run_dir):
    self.directory = RunFiles(run_dir).resume
    self._manager = _manager(self.directory, max_to_keep=1)

  def latest_step(self):
    return self._manager.latest_step()

  @primary_only
  def save(self, state, extra=None):
    """Saves `state` and a small JSON-able `extra` (e.g. the running epoch metrics)."""
    state_dict = jax.device_get(flax.serialization.to_state_dict(state))
    step = int(state_dict['step'])
    if step in self._manager.all_steps():
      return
    _write(
      self._manager,
      step,
      self.directory,
      ocp.args.Composite(
        state=ocp.args.StandardSave(state_dict),
        extra=ocp.args.JsonSave({'digest': tree_digest(state_dict), 'extra': extra or {}}),
      ),
    )

  def restore(self, template):
    """(latest state shaped like `template`, extra), or (None, None) when there is none."""
    step = self.latest_step()
    if step is None:
      return None, None
    target = flax.serialization.to_state_dict(template)
    where = self.directory / str(step)
    advice = 'delete it to restart this run from scratch'
    try:
      restored = self._manager.restore(
        step,
        args=ocp.args.Composite(
          state=ocp.args.StandardRestore(_abstract(target)), extra=ocp.args.JsonRestore()
        ),
      )
    except Exception as e:  # orbax/tensorstore raise many types for missing or corrupt files
      raise SnapshotError(
        f'resume checkpoint {where} cannot be restored ({_cause(e)}); {advice}'
      ) from e
    if tree_digest(restored['state']) != restored['extra']['digest']:
      raise SnapshotError(f'resume checkpoint {where} is corrupt; {advice}')
    return (
      flax.serialization.from_state_dict(template, restored['state']),
      restored['extra']['extra'],
    )

  def remove(self):
    self._manager.close()
    remove_tree(self.directory)
