"""The epoch loop: it is handed a step and an evaluator, and owns time, files and resumption.

It knows nothing of models, losses or KD: the same loop trains teachers and students.
A kill at any point loses at most `checkpoint_every_steps` steps; rerunning resumes from the rolling
checkpoint and, since the data stream is a function of the step, ends with the same parameters.
"""
import pathlib
import time

import jax
import numpy as np
from absl import logging
from tqdm.auto import tqdm

from ckd_jax.checkpoints import ResumeStore, SnapshotStore, write_json
from ckd_jax.data.batching import eval_batches
from ckd_jax.training.metrics_log import MetricsLog
from ckd_jax.training.summary import TensorBoardWriter


def make_evaluator(eval_step, split, batch_size, mean, std, parallel):
  """variables -> {'test_loss', 'test_accuracy'} over the whole split (padded last batch)."""
  parallel.check_batch_size(batch_size, 'eval batch size')
  compiled = parallel.compile(eval_step)

  def evaluate(variables):
    replicated = parallel.replicate(variables)
    total = None
    for batch in eval_batches(split, batch_size, mean, std):
      sums = parallel.unreplicate(compiled(replicated, parallel.shard(batch)))
      total = sums if total is None else jax.tree.map(lambda a, b: a + b, total, sums)
    total = jax.device_get(total)
    return {'test_loss': float(total['loss'] / total['count']),
            'test_accuracy': float(total['correct'] / total['count'])}
  return evaluate


def _add(a, b):
  return b if a is None else jax.tree.map(lambda x, y: x + y, a, b)


def train(*, run_dir, state, train_step, evaluate, batches, num_epochs, parallel, step_inputs=(),
          snapshot_epochs=(), snapshot_metadata=None, final_info=None, checkpoint_every_steps=0,
          learning_rate_fn=None, progress=True, tensorboard=False, description='train'):
  """Trains `state` to `num_epochs`, resuming from `run_dir/resume` if a previous run was killed.

  `step_inputs` are constant extra arguments of `train_step` (e.g. frozen teacher variables).
  Writes `metrics.jsonl` (one line per epoch), snapshots at `snapshot_epochs` and `final.json`
  (with `final_info` merged in);
  with `tensorboard`, the same records as TensorBoard scalars in `run_dir/tensorboard`.
  Returns the final (unreplicated) state and the final record.
  """
  run_dir = pathlib.Path(run_dir)
  run_dir.mkdir(parents=True, exist_ok=True)
  resume, snapshots = ResumeStore(run_dir), SnapshotStore(run_dir) if snapshot_epochs else None
  log = MetricsLog(run_dir / 'metrics.jsonl')
  writer = TensorBoardWriter(run_dir / 'tensorboard') if tensorboard else None
  spe = batches.steps_per_epoch
  total_steps = num_epochs * spe

  restored, extra = resume.restore(state)
  if restored is not None:
    state = restored
    logging.info('%s: resuming from step %d', description, int(state.step))
  start_step = int(state.step)
  epochs_done = start_step // spe
  log.truncate_after(epochs_done)
  for epoch in (snapshots.epochs() if snapshots else []):
    if epoch > epochs_done:
      snapshots.delete(epoch)
  partial = (extra or {}).get('epoch_sums')  # metrics of this epoch's steps before the kill
  epoch_sums = None if partial is None else parallel.replicate(
      {k: np.float32(v) for k, v in partial.items()})
  epoch_time = (extra or {}).get('epoch_time', 0.0)

  step_fn = parallel.compile(train_step, donate_state=True)
  replicated = parallel.replicate(state)
  replicated_inputs = parallel.replicate(tuple(step_inputs))
  bar = tqdm(total=total_steps, initial=start_step, disable=not progress, desc=description,
             unit='step', dynamic_ncols=True)
  tick = time.perf_counter()

  def current_state():
    return parallel.unreplicate(replicated)

  def checkpoint():
    sums = jax.device_get(parallel.unreplicate(epoch_sums)) if epoch_sums is not None else None
    resume.save(current_state(), {
        'epoch_sums': None if sums is None else {k: float(v) for k, v in sums.items()},
        'epoch_time': epoch_time + time.perf_counter() - tick})

  try:
    for step in range(start_step, total_steps):
      replicated, metrics = step_fn(replicated, parallel.shard(batches.batch(step)),
                                    *replicated_inputs)
      epoch_sums = _add(epoch_sums, metrics)
      bar.update(1)
      if (step + 1) % spe == 0:
        epoch = (step + 1) // spe
        sums = jax.device_get(parallel.unreplicate(epoch_sums))  # the one sync per epoch
        epoch_time += time.perf_counter() - tick
        state = current_state()
        record = {'epoch': epoch, 'step': step + 1,
                  'train_loss': float(sums['loss']) / spe,
                  'train_accuracy': float(sums['accuracy']) / spe,
                  'img_per_sec': spe * batches.batch_size / max(epoch_time, 1e-9),
                  'epoch_time_s': epoch_time,
                  **evaluate(state.variables)}
        if learning_rate_fn is not None:
          record['learning_rate'] = float(learning_rate_fn(step))
        log.append(record)
        if writer:
          writer.write(record)
        bar.set_postfix(epoch=epoch, loss=f"{record['train_loss']:.3f}",
                        test_acc=f"{record['test_accuracy']:.4f}",
                        img_s=f"{record['img_per_sec']:.0f}")
        logging.info('%s epoch %d: %s', description, epoch, record)
        if epoch in snapshot_epochs:
          snapshots.save(epoch, state.variables, {**(snapshot_metadata or {}),
                                                  'test_accuracy': record['test_accuracy'],
                                                  'test_loss': record['test_loss']})
        epoch_sums, epoch_time = None, 0.0
        tick = time.perf_counter()
        if epoch < num_epochs:
          checkpoint()
      elif checkpoint_every_steps and (step + 1) % checkpoint_every_steps == 0:
        checkpoint()
  except KeyboardInterrupt:  # Ctrl-C / SIGTERM: keep the steps done so far, then stop
    try:
      checkpoint()
    except Exception as e:  # interrupted inside a step: its donated buffers are gone
      logging.warning('no checkpoint saved on interrupt (%s); the run resumes from the last one', e)
    raise
  finally:
    bar.close()
    if writer:
      writer.close()

  final = {**_final_record(log.read(), num_epochs), **(final_info or {})}
  write_json(run_dir / 'final.json', final)
  resume.remove()
  return current_state(), final


def _final_record(records, num_epochs):
  """Best and last test accuracy, both labelled, so tables never mix them up."""
  if not records:
    raise RuntimeError('training finished without any epoch record')
  best = max(records, key=lambda r: r['test_accuracy'])
  last = records[-1]
  return {'epochs': num_epochs, 'last_epoch': last['epoch'],
          'last_test_accuracy': last['test_accuracy'], 'best_test_accuracy': best['test_accuracy'],
          'best_epoch': best['epoch'], 'train_time_s': sum(r['epoch_time_s'] for r in records)}
