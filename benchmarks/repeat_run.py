"""What a pipeline run costs when it runs again in the same process (a notebook, a sweep in one
process, the test suite), and how much of it is tracing and compiling.

  python benchmarks/repeat_run.py                 # the tests' tiny pipeline, their XLA flags
  python benchmarks/repeat_run.py --repeats 3

Why: JAX reuses a trace and its compiled program only for the same Python function object, so a
run that builds its steps anew traces and loads (or compiles) every program again, even when an
earlier run in the process built the same ones. `training.built_once` makes equal settings give
the same objects; the second and later runs should trace nothing. Prints one row per run (wall
seconds, traces, programs compiled or loaded from the persistent cache, their seconds); writes
JSON (default benchmarks/results/repeat_run.json).
"""

import argparse
import os
import pathlib
import tempfile
import time

from tests_setup import use_the_tests_xla, write_record

HERE = pathlib.Path(__file__).resolve().parent

_TRACE = '/jax/core/compile/jaxpr_trace_duration'
_LOWER = '/jax/core/compile/jaxpr_to_mlir_module_duration'
_BACKEND = '/jax/core/compile/backend_compile_duration'  # a compile or a persistent-cache load


def run_rows(repeats, workdir):
  """Runs the tests' tiny pipeline (four teacher choices) `repeats` times in this process."""
  import jax
  from pipeline_configs import tiny_config

  from ckd_jax import pipeline

  events = []
  jax.monitoring.register_event_duration_secs_listener(
    lambda event, duration, **_: events.append((event, duration))
  )
  rows = []
  for i in range(repeats):
    events.clear()
    start = time.perf_counter()
    pipeline.run(
      tiny_config(choices=('final', 'epoch:1', 'full_ensemble:1', 'none')),
      os.path.join(workdir, str(i)),
    )
    seconds = time.perf_counter() - start
    count = lambda name: sum(1 for e, _ in events if e == name)
    total = lambda *names: sum(d for e, d in events if e in names)
    rows.append(
      dict(
        run=i + 1,
        seconds=seconds,
        traces=count(_TRACE),
        programs=count(_BACKEND),
        trace_lower_s=total(_TRACE, _LOWER),
        backend_s=total(_BACKEND),
      )
    )
  return rows


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--repeats', type=int, default=2, help='runs in this process (>= 2)')
  parser.add_argument('--out', default=str(HERE / 'results' / 'repeat_run.json'))
  args = parser.parse_args(argv)
  if args.repeats < 2:
    parser.error(f'--repeats must be at least 2, got {args.repeats}')
  use_the_tests_xla(compilation_cache=True)
  with tempfile.TemporaryDirectory() as workdir:
    rows = run_rows(args.repeats, workdir)
  print('| run | wall s | traces | programs compiled or loaded | trace + lower s | backend s |')
  print('|---:|---:|---:|---:|---:|---:|')
  for r in rows:
    print(
      f'| {r["run"]} | {r["seconds"]:.2f} | {r["traces"]} | {r["programs"]} | '
      f'{r["trace_lower_s"]:.2f} | {r["backend_s"]:.2f} |'
    )
  write_record(args.out, rows)
  return rows


if __name__ == '__main__':
  main()
