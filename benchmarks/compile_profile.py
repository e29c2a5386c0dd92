"""A pytest plugin that says where a test run compiles: programs and seconds per test file.

  TMPDIR=$(mktemp -d) PYTHONPATH=benchmarks python -m pytest -n 2 --dist loadfile -q tests \
      -p compile_profile

Run it on an empty TMPDIR (the tests' compilation cache lives there) to see a new machine's cost.
It sums jax.monitoring's compile events per test; with pytest-xdist each worker writes its own
JSON (compile_profile_<worker>.json in TMPDIR) and prints its own table. Backend
compilation is what the persistent cache saves; tracing and lowering are paid warm as well.
"""

import collections
import json
import os
import tempfile

import jax.monitoring

_BACKEND = '/jax/core/compile/backend_compile_duration'
_FRONTEND = (
  '/jax/core/compile/jaxpr_trace_duration',
  '/jax/core/compile/jaxpr_to_mlir_module_duration',
)

_current_test = ['<collection>']
# per test: [backend programs compiled, backend seconds, trace + lowering seconds]
_per_test = collections.defaultdict(lambda: [0, 0.0, 0.0])


def _on_duration(event, duration, **_):
  totals = _per_test[_current_test[0]]
  if event == _BACKEND:
    totals[0] += 1
    totals[1] += duration
  elif event in _FRONTEND:
    totals[2] += duration


jax.monitoring.register_event_duration_secs_listener(_on_duration)


def pytest_runtest_setup(item):
  _current_test[0] = item.nodeid


def pytest_sessionfinish(session):
  worker = os.environ.get('PYTEST_XDIST_WORKER', 'main')
  json_path = os.path.join(tempfile.gettempdir(), f'compile_profile_{worker}.json')
  with open(json_path, 'w') as f:
    json.dump(dict(_per_test), f, indent=1)
  per_file = collections.defaultdict(lambda: [0, 0.0, 0.0])
  for test, totals in _per_test.items():
    for i, value in enumerate(totals):
      per_file[test.split('::')[0]][i] += value
  print(f'\n{"file":40s} {"programs":>8s} {"backend s":>10s} {"trace+lower s":>14s}')
  for path, (programs, backend, frontend) in sorted(per_file.items(), key=lambda kv: -kv[1][1]):
    print(f'{path:40s} {programs:8d} {backend:10.1f} {frontend:14.1f}')
  print(f'per test: {json_path}')
