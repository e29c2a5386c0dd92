"""The epoch loop: it is handed a step and an evaluator, and owns time, files and resumption.

It knows nothing of models, losses or KD: the same loop trains teachers and students.
A kill at any point loses at most `checkpoint_every_steps` steps; rerunning resumes from the rolling
checkpoint and, since the data stream is a function of the step, ends with the same parameters.
"""
import dataclasses
import signal
import threading
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from tqdm.auto import tqdm

from ckd_jax.checkpoints import ResumeStore, SnapshotStore
from ckd_jax.data.batching import eval_batches
from ckd_jax.training.steps import make_multi_step
from ckd_jax.training.writers import JsonlWriter, LoggingWriter, MultiWriter, TensorBoardWriter
from ckd_jax.workdir.files import write_json
from ckd_jax.workdir.layout import RunFiles


class DivergenceError(FloatingPointError):
  """The loss or the parameters became non-finite; nothing from after the last good checkpoint
  was saved."""


@jax.jit
def _all_finite(tree):
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


class _StopAtStepBoundary:
  """Ctrl-C and SIGTERM stop the loop between two steps, where the state and the running metrics
  agree and no donated buffer is in flight, so the interrupt checkpoint is always exact.

  A second Ctrl-C stops at once. Only the main thread may set signal handlers; elsewhere the
  process's own handlers stay.
  """

  def __enter__(self):
    self.requested, self._previous = None, {}
    if threading.current_thread() is threading.main_thread():
      for sig in (signal.SIGINT, signal.SIGTERM):
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
  checkpoint_every_steps: int = 0  # 0: only at epoch ends (and on Ctrl-C / SIGTERM)
  steps_per_call: int = 1  # K > 1: K steps per device call, one lax.scan (see `_block_end`)
  progress: bool = True
  tensorboard: bool = False
  description: str = 'train'


def make_evaluator(eval_step, split, batch_size, mean, std, parallel):
  """variables -> {'test_loss', 'test_accuracy'} over the whole split (padded last batch).

  `evaluate(variables, replicated=True)` takes variables already placed by `parallel.replicate`
  (the training loop's own state), so nothing goes through the host but the three sums. The batch
  is rounded up to a multiple of the devices: padding is masked, so the result is the same.
  """
  compiled = parallel.compile(eval_step)
  batch_size = -(-batch_size // parallel.num_devices) * parallel.num_devices

  def evaluate(variables, replicated=False):
    if not replicated:
      variables = parallel.replicate(variables)
    total = None
    for batch in eval_batches(split, batch_size, mean, std):
      total = _add(total, compiled(variables, parallel.shard(batch)))
    total = parallel.unreplicate(total)
    return {'test_loss': float(total['loss'] / total['count']),
            'test_accuracy': float(total['correct'] / total['count'])}
  return evaluate


def _add(a, b):
  return b if a is None else jax.tree.map(lambda x, y: x + y, a, b)


class _EpochMeter:
  """The running epoch: step-metric sums kept on the device (no host sync per step), wall time."""

  def __init__(self, sums=None, seconds=0.0):
    self.sums, self._seconds, self._tick = sums, seconds, time.perf_counter()

  def add(self, metrics):
    self.sums = _add(self.sums, metrics)

  def seconds(self):
    return self._seconds + time.perf_counter() - self._tick


def train(run_dir, state, train_step, evaluate, batches, parallel, options, *, step_inputs=(),
          learning_rate_fn=None, snapshot_metadata=None, final_info=None):
  """Trains `state` to `options.num_epochs`, resuming from `run_dir/resume` after a kill.

  `train_step(state, batch, *step_inputs) -> (state, metrics)`; `step_inputs` are constant (e.g. the
  frozen teacher variables). Writes metrics.jsonl (one record per epoch), snapshots at
  `options.snapshot_epochs` (with `snapshot_metadata`) and final.json (with `final_info` merged in).
  Returns the final (unreplicated) state and the final record.
  """
  loop = _EpochLoop(RunFiles(run_dir), batches, parallel, options)
  return loop.run(state, train_step, evaluate, step_inputs, learning_rate_fn,
                  snapshot_metadata or {}, final_info or {})


class _EpochLoop:

  def __init__(self, files, batches, parallel, options):
    files.dir.mkdir(parents=True, exist_ok=True)
    self.files, self.batches, self.parallel, self.options = files, batches, parallel, options
    self.resume_store = ResumeStore(files.dir)
    self.snapshots = SnapshotStore(files.dir) if options.snapshot_epochs else None
    self.metrics_log = JsonlWriter(files.metrics)

  def run(self, state, train_step, evaluate, step_inputs, learning_rate_fn, snapshot_metadata,
          final_info):
    opts, spe = self.options, self.batches.steps_per_epoch
    state, meter = self._resume(state)
    start_step, total_steps = int(state.step), opts.num_epochs * spe
    step_fn = self.parallel.compile(train_step, donate_state=True)
    multi_step_fn = self.parallel.compile(make_multi_step(train_step), donate_state=True)
    inputs = self.parallel.replicate(tuple(step_inputs))
    self.replicated = self.parallel.replicate(state)
    writer = MultiWriter([self.metrics_log, LoggingWriter(opts.description)] + (
        [TensorBoardWriter(self.files.tensorboard)] if opts.tensorboard else []))
    bar = tqdm(total=total_steps, initial=start_step, disable=not opts.progress,
               desc=opts.description, unit='step', dynamic_ncols=True)
    try:
      with _StopAtStepBoundary() as stop:
        step = start_step
        while step < total_steps:
          if stop.requested:
            raise KeyboardInterrupt(stop.requested)
          end = self._block_end(step)
          if end - step == 1:
            self.replicated, metrics = step_fn(
                self.replicated, self.parallel.shard(self.batches.batch(step)), *inputs)
          else:
            self.replicated, metrics = multi_step_fn(
                self.replicated, self.parallel.shard_steps(self.batches.block(step, end - step)),
                *inputs)
          meter.add(metrics)
          bar.update(end - step)
          step = end
          if step % spe == 0:
            record = self._end_epoch(step, meter, evaluate, learning_rate_fn, snapshot_metadata)
            writer.write(record)
            bar.set_postfix(epoch=record['epoch'], loss=f"{record['train_loss']:.3f}",
                            test_acc=f"{record['test_accuracy']:.4f}",
                            img_s=f"{record['img_per_sec']:.0f}")
            meter = _EpochMeter()
            if record['epoch'] < opts.num_epochs:
              self._checkpoint(meter)
          elif opts.checkpoint_every_steps and step % opts.checkpoint_every_steps == 0:
            self._checkpoint(meter)
    except KeyboardInterrupt:  # Ctrl-C / SIGTERM: keep the steps done so far, then stop
      try:
        self._checkpoint(meter)
      except Exception as e:  # diverged, or stopped inside a step by a second Ctrl-C
        logging.warning('no checkpoint saved on interrupt (%s); the run resumes from the last one',
                        e)
      raise
    finally:
      bar.close()
      writer.close()
    return self._finish(final_info)

  def _block_end(self, step):
    """Where the call that starts at `step` ends: K steps, cut at the epoch end, at the next
    rolling checkpoint and at multiples of K within the epoch. The cuts depend on the step alone,
    so a run resumed at any checkpoint calls exactly the blocks an uninterrupted run calls."""
    spe, k, every = self.batches.steps_per_epoch, self.options.steps_per_call, (
        self.options.checkpoint_every_steps)
    in_epoch = step % spe
    ends = [step - in_epoch + spe, step - in_epoch + (in_epoch // k + 1) * k]
    if every:
      ends.append((step // every + 1) * every)
    return min(ends)

  def _resume(self, state):
    """The state and the running epoch to continue from; forgets what followed the checkpoint."""
    restored, extra = self.resume_store.restore(state)
    if restored is not None:
      state = restored
      logging.info('%s: resuming from step %d', self.options.description, int(state.step))
    epochs_done = int(state.step) // self.batches.steps_per_epoch
    self.metrics_log.truncate_after(epochs_done)
    for epoch in (self.snapshots.epochs() if self.snapshots else []):
      if epoch > epochs_done:
        self.snapshots.delete(epoch)
    partial = (extra or {}).get('epoch_sums')  # metrics of this epoch's steps before the kill
    sums = None if partial is None else self.parallel.replicate(
        {k: np.float32(v) for k, v in partial.items()})
    return state, _EpochMeter(sums, (extra or {}).get('epoch_time', 0.0))

  def _state(self):
    return self.parallel.unreplicate(self.replicated)

  def _end_epoch(self, steps_done, meter, evaluate, learning_rate_fn, snapshot_metadata):
    """The epoch's record (train means, test metrics, speed); its snapshot if one is kept."""
    spe, batch_size = self.batches.steps_per_epoch, self.batches.batch_size
    epoch = steps_done // spe
    sums = jax.device_get(self.parallel.unreplicate(meter.sums))  # the one sync per epoch
    seconds = meter.seconds()
    state = self._state()
    self._check_finite(state, sums, steps_done)
    record = {'epoch': epoch, 'step': steps_done,
              'train_loss': float(sums['loss']) / spe,
              'train_accuracy': float(sums['accuracy']) / spe,
              'img_per_sec': spe * batch_size / max(seconds, 1e-9),
              'epoch_time_s': seconds,
              **evaluate(self.replicated.variables, replicated=True)}
    if learning_rate_fn is not None:
      record['learning_rate'] = float(learning_rate_fn(steps_done - 1))  # of the epoch's last step
    if epoch in self.options.snapshot_epochs:
      self.snapshots.save(epoch, state.variables, {**snapshot_metadata,
                                                   'test_accuracy': record['test_accuracy'],
                                                   'test_loss': record['test_loss']})
    return record

  def _check_finite(self, state, sums, step):
    """Raises DivergenceError, before anything of this state is saved, if it is not finite."""
    bad = [name for name, ok in (('loss', sums is None or np.isfinite(sums['loss'])),
                                 ('parameters', bool(_all_finite(state.variables)))) if not ok]
    if bad:
      last = self.resume_store.latest_step()
      kept = f'the last good checkpoint (step {last}) is kept' if last is not None else (
          'no checkpoint was saved before')
      raise DivergenceError(
          f'{self.options.description} diverged: non-finite {" and ".join(bad)} by step {step}; '
          f'{kept} and no later snapshot is written. Lower the learning rate (in a new --workdir, '
          'or with --allow_config_change to continue this one).')

  def _checkpoint(self, meter):
    sums = None if meter.sums is None else jax.device_get(self.parallel.unreplicate(meter.sums))
    state = self._state()
    self._check_finite(state, sums, int(state.step))
    self.resume_store.save(state, {
        'epoch_sums': None if sums is None else {k: float(v) for k, v in sums.items()},
        'epoch_time': meter.seconds()})

  def _finish(self, final_info):
    final = {**_final_record(self.metrics_log.read(), self.options.num_epochs), **final_info}
    write_json(self.files.final, final)
    self.resume_store.remove()
    return self._state(), final


def _final_record(records, num_epochs):
  """Best and last test accuracy, both labelled, so tables never mix them up."""
  if not records:
    raise RuntimeError('training finished without any epoch record')
  best = max(records, key=lambda r: r['test_accuracy'])
  last = records[-1]
  return {'epochs': num_epochs, 'last_epoch': last['epoch'],
          'last_test_accuracy': last['test_accuracy'], 'best_test_accuracy': best['test_accuracy'],
          'best_epoch': best['epoch'], 'train_time_s': sum(r['epoch_time_s'] for r in records)}
