"""What the end-to-end tests compare of two runs: their epoch records without the timings (which
differ between any two runs), and the traces JAX makes during a piece of work."""

import contextlib
import json
import pathlib

import jax

TIMING = ('epoch_time_s', 'img_per_sec')


def untimed_records(run_dir):
  """The epoch records of `run_dir`/metrics.jsonl without their timings; the file must exist (an
  absent one would make two empty runs compare equal)."""
  lines = (pathlib.Path(run_dir) / 'metrics.jsonl').read_text().splitlines()
  return [{k: v for k, v in json.loads(line).items() if k not in TIMING} for line in lines]


@contextlib.contextmanager
def counted_traces():
  """Yields a list that gets one entry per function JAX traces inside the `with` block (read by
  the tests that check that a run again in the process reuses its programs)."""
  traces = []

  def listener(event, duration, **_):
    if event == '/jax/core/compile/jaxpr_trace_duration':
      traces.append(duration)

  jax.monitoring.register_event_duration_secs_listener(listener)
  try:
    yield traces
  finally:
    jax.monitoring.unregister_event_duration_listener(listener)
