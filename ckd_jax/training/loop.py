"""The epoch loop: it is handed a step and an evaluator, and owns time, files and resumption.

It knows nothing of models, losses or KD: the same loop trains teachers and students.
A kill at any point loses at most `checkpoint_every_steps` steps; rerunning resumes from the rolling
checkpoint and, since the data stream is a function of the step, ends with the same parameters.
"""

import contextlib
import dataclasses
import pathlib
import signal
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from tqdm.auto import tqdm

from ckd_jax.checkpoints import ResumeStore, SnapshotStore
from ckd_jax.data.batching import eval_batches
from ckd_jax.distributed import is_primary, sync
from ckd_jax.training.steps import built_once, make_multi_step, over_runs
from ckd_jax.training.writers import JsonlWriter, LoggingWriter, MultiWriter, TensorBoardWriter
from ckd_jax.workdir.files import write_json
from ckd_jax.workdir.layout import RunFiles

if TYPE_CHECKING:
  from ckd_jax.data_parallel import DataParallel


class DivergenceError(FloatingPointError):
  """The loss or the parameters became non-finite; nothing from after the last good checkpoint
  was saved."""


def _all_finite(tree):
  """Checked on the host, where the loop's states are copied anyway: a jitted check would compile
  once per state structure, which costs more than all the epochs' host checks of a small model."""
  return all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(tree))


class _StopAtStepBoundary:
  """Ctrl-C, SIGTERM and SIGUSR2 (SLURM's time-limit warning) stop the loop between two steps,
  where the state and the running metrics agree and no donated buffer is in flight, so the
  interrupt checkpoint is always exact.

  A second Ctrl-C stops at once. Only the main thread may set signal handlers; elsewhere the
  process's own handlers stay.
  """

  def __enter__(self):
    self.requested, self._previous = None, {}
    if threading.current_thread() is threading.main_thread():
      for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR2):
        self._previous[sig] = signal.signal(sig, self._request)
    return self

  def _request(self, signum, frame):
    del frame
    if self.requested:
      raise KeyboardInterrupt
    self.requested = signal.Signals(signum).name

  def __exit__(self, *exc_info):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)


@dataclasses.dataclass(frozen=True)
class LoopOptions:
  """What the loop needs to know besides the step: length, files kept, and what is shown."""

  num_epochs: int
  snapshot_epochs: tuple = ()
  # The rolling resume checkpoint: every N steps, or 0: at every epoch end (and on Ctrl-C / SIGTERM
  # either way). Only one of the two: an Orbax save has a fixed cost even for a small model, a
  # large part of a short epoch.
  checkpoint_every_steps: int = 0
  steps_per_call: int = (
    1  # K > 1: K steps per device call, one lax.scan (see `_Lockstep.block_end`)
  )
  progress: bool = True
  tensorboard: bool = False
  description: str = 'train'


def make_evaluator(eval_step, split, batch_size, mean, std, parallel, single_pass=False):
  """variables -> {'test_loss', 'test_accuracy'} over the whole split (padded last batch).

  `evaluate(variables, replicated=True)` takes variables already placed by `parallel.replicate`
  (the training loop's own state), so nothing goes through the host but the three sums. The batch
  is rounded up to a multiple of the devices: padding is masked, so the result is the same.
  `single_pass=True` (an evaluator used for one pass, e.g. a teacher ensemble's accuracy)
  compiles without XLA's backend optimisations: compiling faster pays for one slower pass, not for
  a per-epoch evaluator's many.
  """
  compiled = parallel.compile(
    eval_step, compiler_options=({'xla_backend_optimization_level': 0} if single_pass else None)
  )
  batch_size = -(-batch_size // parallel.num_devices) * parallel.num_devices

  def evaluate(variables, replicated=False):
    if not replicated:
      variables = parallel.replicate(variables)
    total = None
    for batch in eval_batches(split, batch_size, mean, std, parallel.process_rows(batch_size)):
      total = _add(total, compiled(variables, parallel.shard(batch)))
    total = parallel.unreplicate(total)
    return {
      'test_loss': float(total['loss'] / total['count']),
      'test_accuracy': float(total['correct'] / total['count']),
    }

  return evaluate


def _add(a, b):
  """a + b leaf by leaf (a None: nothing yet), in one device call: one eager addition per metric
  would dispatch several device calls per step, more host time than small steps leave."""
  return b if a is None else _tree_sum(a, b)


@jax.jit
def _tree_sum(a, b):
  return jax.tree.map(jnp.add, a, b)


class _EpochMeter:
  """The running epoch: step-metric sums kept on the device (no host sync per step), and its
  training time: the steps and the waits for them, not the checkpoints written in between."""

  def __init__(self, sums=None, seconds=0.0):
    self.sums, self._seconds, self._tick = sums, seconds, time.perf_counter()

  def add(self, metrics):
    self.sums = _add(self.sums, metrics)

  def seconds(self):
    return self._seconds + (0.0 if self._tick is None else time.perf_counter() - self._tick)

  @contextlib.contextmanager
  def paused(self):
    """Time spent inside is not the epoch's (a checkpoint being written)."""
    self._seconds, self._tick = self.seconds(), None
    try:
      yield
    finally:
      self._tick = time.perf_counter()


@dataclasses.dataclass(frozen=True)
class Step:
  """A training step as the loop runs it.

  `update(state, batch) -> (state, metrics)` is the pure step (`make_train_step`). `prepare(batch,
  *constants) -> batch`, when given, runs first as a program of its own with the run's constants
  (KD: the frozen teachers add their soft targets), so that one compiled `update` serves whatever
  prepares its batches. The loop compiles both for one step and for K, mapped over stacked runs.
  """

  update: Callable
  prepare: Optional[Callable] = None


@dataclasses.dataclass(frozen=True)
class LoopRun:
  """One run for the loop: where its files go, its initial state and batches, the constants its
  step's `prepare` takes (e.g. its teachers' variables), and what its files record."""

  run_dir: pathlib.Path
  state: Any
  batches: Any
  constants: tuple = ()
  description: str = 'train'
  snapshot_metadata: dict = dataclasses.field(default_factory=dict)
  final_info: dict = dataclasses.field(default_factory=dict)


def train(
  runs: Sequence[LoopRun],
  step: Step,
  evaluate: Callable[..., dict],
  parallel: 'DataParallel',
  options: LoopOptions,
  learning_rate_fn: Optional[Callable[[int], float]] = None,
) -> list[tuple[Any, dict]]:
  """Trains `runs` to `options.num_epochs`, resuming each from `run_dir/resume` after a kill.

  One run, or several of one architecture in lockstep as ONE program: their states stacked and
  the step mapped over them (`over_runs`), each with its own batches, constants and files. Runs
  trained together must stand at the same resume step. Every run writes metrics.jsonl (one record
  per epoch), snapshots at `options.snapshot_epochs` (with its `snapshot_metadata`) and final.json
  (with its `final_info`).

  Args:
    runs: the runs, each with its initial state, batches (`make_train_batches`) and files.
    step: `Step(update, prepare)`; `prepare` gets each run's `constants`.
    evaluate: `make_evaluator(...)`: variables -> {'test_loss', 'test_accuracy'}.
    parallel: the `DataParallel` that places states and batches on the devices.
    options: length, snapshots, checkpoints and display (`LoopOptions`).
    learning_rate_fn: step -> learning rate, recorded with each epoch (None: not recorded).

  Returns:
    [(final unreplicated state, final record)], in the order of `runs`.
  """
  if step.prepare is None and any(run.constants for run in runs):
    raise ValueError('run constants go to a Step.prepare, and this step has none')
  lockstep = _Lockstep(runs, parallel, options)
  steps_per_epoch = lockstep.steps_per_epoch
  start_step, meter = lockstep.resume()
  total_steps = options.num_epochs * steps_per_epoch
  update_one, update_block = _compiled_update(step.update, parallel, lockstep.stacked)
  if step.prepare is not None:
    prepare_one, prepare_block = _compiled_prepare(step.prepare, parallel, lockstep.stacked)
    constants = parallel.replicate(lockstep.stack([run.constants for run in runs]))
  bar = tqdm(
    total=total_steps,
    initial=start_step,
    disable=not (options.progress and is_primary()),
    desc=options.description,
    unit='step',
    dynamic_ncols=True,
  )
  try:
    with _StopAtStepBoundary() as stop:
      step_done = start_step
      while step_done < total_steps:
        if stop.requested:
          raise KeyboardInterrupt(stop.requested)
        end = lockstep.block_end(step_done)
        one = end - step_done == 1  # one batch, else a block of K stacked on a steps axis
        data = lockstep.shard(
          lockstep.data(
            lambda b: b.batch(step_done) if one else b.block(step_done, end - step_done)
          ),
          batch_axis=0 if one else 1,
        )
        if step.prepare is not None:
          data = (prepare_one if one else prepare_block)(data, *constants)
        update = update_one if one else update_block
        lockstep.replicated, metrics = update(lockstep.replicated, data)
        meter.add(metrics)
        bar.update(end - step_done)
        step_done = end
        epoch_end = step_done % steps_per_epoch == 0
        if epoch_end:
          record = lockstep.end_epoch(step_done, meter, evaluate, learning_rate_fn)[0]
          bar.set_postfix(
            epoch=record['epoch'],
            loss=f'{record["train_loss"]:.3f}',
            test_acc=f'{record["test_accuracy"]:.4f}',
            img_s=f'{record["img_per_sec"]:.0f}',
          )
          meter = _EpochMeter()
        every = options.checkpoint_every_steps
        if step_done < total_steps and (step_done % every == 0 if every else epoch_end):
          lockstep.checkpoint(meter)
  except KeyboardInterrupt:  # Ctrl-C / SIGTERM: keep the steps done so far, then stop
    try:
      lockstep.checkpoint(meter)
    except Exception as e:  # diverged, or stopped inside a step by a second Ctrl-C
      logging.warning('no checkpoint saved on interrupt (%s); the run resumes from the last one', e)
    raise
  finally:
    bar.close()
    lockstep.close()
  return lockstep.finish()


class _RunOutputs:
  """One run's files: metrics log, snapshots, resume checkpoint and final record."""

  def __init__(self, run, options):
    files = RunFiles(run.run_dir)
    files.dir.mkdir(parents=True, exist_ok=True)
    self.files, self.options, self.description = files, options, run.description
    self.snapshot_metadata, self.final_info = run.snapshot_metadata, run.final_info
    self.resume_store = ResumeStore(files.dir)
    self.snapshots = SnapshotStore(files.dir) if options.snapshot_epochs else None
    self.metrics_log = JsonlWriter(files.metrics)

  def open_writer(self):
    tensorboard = self.options.tensorboard and is_primary()
    self.writer = MultiWriter(
      [self.metrics_log, LoggingWriter(self.description)]
      + ([TensorBoardWriter(self.files.tensorboard)] if tensorboard else [])
    )

  def resume(self, state, steps_per_epoch):
    """The state and the partial epoch (sums, seconds) to continue from; forgets what followed the
    checkpoint."""
    restored, extra = self.resume_store.restore(state)
    if restored is not None:
      state = restored
      logging.info('%s: resuming from step %d', self.description, int(state.step))
    epochs_done = int(state.step) // steps_per_epoch
    self.metrics_log.truncate_after(epochs_done)
    for epoch in self.snapshots.epochs() if self.snapshots else []:
      if epoch > epochs_done:
        self.snapshots.delete(epoch)
    extra = extra or {}
    return state, extra.get('epoch_sums'), extra.get('epoch_time', 0.0)

  def check_finite(self, state, sums, step):
    """Raises DivergenceError, before anything of this state is saved, if it is not finite."""
    bad = [
      name
      for name, ok in (
        ('loss', sums is None or np.isfinite(sums['loss'])),
        ('parameters', _all_finite(state.variables)),
      )
      if not ok
    ]
    if bad:
      last = self.resume_store.latest_step()
      kept = (
        f'the last good checkpoint (step {last}) is kept'
        if last is not None
        else ('no checkpoint was saved before')
      )
      raise DivergenceError(
        f'{self.description} diverged: non-finite {" and ".join(bad)} by step {step}; '
        f'{kept} and no later snapshot is written. Lower the learning rate (in a new --workdir, '
        'or with --allow_config_change to continue this one).'
      )

  def checkpoint(self, state, sums, seconds):
    """The resume checkpoint (after `check_finite`: the loop checks every run before any saves)."""
    self.resume_store.save(
      state,
      {
        'epoch_sums': None if sums is None else {k: float(v) for k, v in sums.items()},
        'epoch_time': seconds,
      },
    )

  def end_epoch(self, record, state):
    """Writes the epoch's record, and its snapshot if one is kept."""
    epoch = record['epoch']
    if epoch in self.options.snapshot_epochs:
      self.snapshots.save(
        epoch,
        state.variables,
        {
          **self.snapshot_metadata,
          'test_accuracy': record['test_accuracy'],
          'test_loss': record['test_loss'],
        },
      )
    self.writer.write(record)

  def finish(self, state):
    sync(f'finish {self.files.dir}')  # process 0 has written the last epoch record
    final = {**_final_record(self.metrics_log.read(), self.options.num_epochs), **self.final_info}
    write_json(self.files.final, final)
    self.resume_store.remove()
    return state, final


class _Lockstep:
  """The device side of S runs in lockstep: one state (S = 1) or S stacked states, replicated
  over the devices; a `_RunOutputs` per run keeps its files."""

  def __init__(self, runs, parallel, options):
    batches = [run.batches for run in runs]
    if len({(b.steps_per_epoch, b.batch_size) for b in batches}) != 1:
      raise ValueError('runs trained together need the same batch size and steps per epoch')
    self.outputs = [_RunOutputs(run, options) for run in runs]
    self.initial_states = [run.state for run in runs]
    self.batches, self.parallel, self.options = batches, parallel, options
    self.stacked = len(runs) > 1
    self.steps_per_epoch = batches[0].steps_per_epoch

  def close(self):
    for output in self.outputs:
      output.writer.close()

  def finish(self):
    return [output.finish(state) for output, state in zip(self.outputs, self._states())]

  def stack(self, trees):
    """One tree (S = 1) or the trees stacked on a new leading run axis."""
    return (
      jax.tree.map(lambda *x: np.stack([np.asarray(v) for v in x]), *trees)
      if (self.stacked)
      else trees[0]
    )

  def _unstack(self, tree):
    return (
      [jax.tree.map(lambda x: x[i], tree) for i in range(len(self.outputs))]
      if (self.stacked)
      else [tree]
    )

  def data(self, get):
    """`get(batches)` of every run: one batch (S = 1), or the runs' batches stacked."""
    data = [get(b) for b in self.batches]
    return jax.tree.map(lambda *x: jnp.stack(x), *data) if self.stacked else data[0]

  def shard(self, batch, batch_axis):
    """The global-batch axis follows the run axis (when stacked) and the steps axis (blocks)."""
    return self.parallel.shard(batch, batch_axis + self.stacked)

  def block_end(self, step):
    """Where the call that starts at `step` ends: K steps, cut at the epoch end, at the next
    rolling checkpoint and at multiples of K within the epoch; a call that the cuts would leave
    shorter than K is one step, so that only two programs compile (K steps and one), not one per
    remainder length. The cuts depend on the step alone, so a run resumed at any checkpoint calls
    exactly the blocks an uninterrupted run calls."""
    steps_per_epoch, k, every = (
      self.batches[0].steps_per_epoch,
      self.options.steps_per_call,
      (self.options.checkpoint_every_steps),
    )
    in_epoch = step % steps_per_epoch
    ends = [step - in_epoch + steps_per_epoch, step - in_epoch + (in_epoch // k + 1) * k]
    if every:
      ends.append((step // every + 1) * every)
    end = min(ends)
    return end if end - step == k else step + 1

  def resume(self):
    """Places every run's state to continue from (all at the same step) on the devices and opens
    the runs' writers; returns (that step, the running epoch's meter)."""
    resumed = [
      output.resume(state, self.steps_per_epoch)
      for output, state in zip(self.outputs, self.initial_states)
    ]
    if len({int(state.step) for state, _, _ in resumed}) != 1:
      raise RuntimeError('runs trained together resumed at different steps')
    partial = [sums for _, sums, _ in resumed]  # metrics of this epoch's steps before the kill
    sums = (
      None
      if partial[0] is None
      else self.parallel.replicate(
        self.stack([{k: np.float32(v) for k, v in p.items()} for p in partial])
      )
    )
    self.replicated = self.parallel.replicate(self.stack([state for state, _, _ in resumed]))
    for output in self.outputs:
      output.open_writer()
    return int(resumed[0][0].step), _EpochMeter(sums, resumed[0][2])

  def _states(self):
    return self._unstack(self.parallel.unreplicate(self.replicated))

  def _sums(self, meter):
    if meter.sums is None:
      return [None] * len(self.outputs)
    return self._unstack(jax.device_get(self.parallel.unreplicate(meter.sums)))

  def end_epoch(self, steps_done, meter, evaluate, learning_rate_fn):
    """Each run's record (train means, test metrics, speed), written with its snapshot."""
    steps_per_epoch, batch_size = self.batches[0].steps_per_epoch, self.batches[0].batch_size
    states, sums = self._states(), self._sums(meter)  # the one sync per epoch
    seconds = meter.seconds()  # after the sync: the steps dispatched ahead of the device are done
    for output, state, run_sums in zip(self.outputs, states, sums):
      output.check_finite(state, run_sums, steps_done)
    records = []
    for output, state, run_sums in zip(self.outputs, states, sums):
      test = (
        evaluate(self.replicated.variables, replicated=True)
        if not self.stacked
        else evaluate(state.variables)
      )
      record = {
        'epoch': steps_done // steps_per_epoch,
        'step': steps_done,
        'train_loss': float(run_sums['loss']) / steps_per_epoch,
        'train_accuracy': float(run_sums['accuracy']) / steps_per_epoch,
        # this run's images
        'img_per_sec': steps_per_epoch * batch_size / max(seconds, 1e-9),
        'epoch_time_s': seconds,
        **test,
      }
      if learning_rate_fn is not None:
        record['learning_rate'] = float(learning_rate_fn(steps_done - 1))  # the epoch's last step
      output.end_epoch(record, state)
      records.append(record)
    return records

  def checkpoint(self, meter):
    states, sums = self._states(), self._sums(meter)  # waits for the steps: their time counts
    with meter.paused():
      for output, state, run_sums in zip(self.outputs, states, sums):
        output.check_finite(state, run_sums, int(state.step))
      for output, state, run_sums in zip(self.outputs, states, sums):
        output.checkpoint(state, run_sums, meter.seconds())


def _compiled_update(train_step, parallel, stacked):
  """The one-step and K-step programs of `train_step`, mapped over the runs when `stacked`."""
  one_step, multi_step = built_once(_update_functions, train_step, stacked)
  return (
    parallel.compile(one_step, donate_state=True),
    parallel.compile(multi_step, donate_state=True),
  )


def _update_functions(train_step, stacked):
  """Built once per step (`built_once`): `make_multi_step` and `over_runs` make new functions at
  every call, and JAX reuses a trace only for the same function object."""
  one_step, multi_step = train_step, make_multi_step(train_step)
  if stacked:
    one_step, multi_step = over_runs(one_step), over_runs(multi_step)
  return one_step, multi_step


def _compiled_prepare(prepare, parallel, stacked):
  """The programs of `prepare` for one batch and for a block of K (`lax.map` over the steps),
  mapped over the runs when `stacked`."""
  one, block = built_once(_prepare_functions, prepare, stacked)
  return parallel.compile_batch_fn(one), parallel.compile_batch_fn(block)


def _prepare_functions(prepare, stacked):
  """Built once per `prepare`, like `_update_functions`."""
  one, block = (
    prepare,
    lambda batches, *constants: jax.lax.map(lambda batch: prepare(batch, *constants), batches),
  )
  if stacked:
    one, block = over_runs(one), over_runs(block)
  return one, block


def _final_record(records, num_epochs):
  """Best and last test accuracy, both labelled, so tables never mix them up."""
  if not records:
    raise RuntimeError('training finished without any epoch record')
  best = max(records, key=lambda r: r['test_accuracy'])
  last = records[-1]
  return {
    'epochs': num_epochs,
    'last_epoch': last['epoch'],
    'last_test_accuracy': last['test_accuracy'],
    'best_test_accuracy': best['test_accuracy'],
    'best_epoch': best['epoch'],
    'train_time_s': sum(r['epoch_time_s'] for r in records),
  }
