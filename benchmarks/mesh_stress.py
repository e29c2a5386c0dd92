"""Stress run of the CPU device mesh: how often does a process abort in an XLA collective?

  python benchmarks/mesh_stress.py --minutes 30 --processes 2              # the default settings
  python benchmarks/mesh_stress.py --minutes 30 --settings default,timeouts,devices2,none

Each worker process does what the distill stage does, over and over: a new run (fresh state, new
step closures, so jit traces again and compiles or loads from the compilation cache), the
teachers' targets as one mesh-sharded program and the student's KD step as another, a few steps,
an evaluation and a read-back to the host. --processes workers run side by side (as a sweep or a
second study does), each for --minutes; a worker that dies is counted (by its signal; an XLA
collective abort is SIGABRT with "Termination timeout" on stderr) and started again.

Settings (--settings, comma-separated), each in its own processes, on the library's default count
of host devices (`data_parallel.host_device_count(0)`) unless they say otherwise:
  default                   the library as it is (the host paced: parallel.CPU_MAX_IN_FLIGHT).
  unbounded                 pacing off (the library before it): XLA's 40 s collective timeouts.
  unbounded_no_eigen        the same with --xla_cpu_multi_thread_eigen=false.
  unbounded_long_timeouts   the same with both collective timeouts at 900 s (hangs, not aborts).
  unbounded_devices2        two host devices, pacing off.
  none                      one device, no mesh (no collective at all).
Prints a table (runs, steps, aborts, aborts per hour, ms per step) and writes JSON (--out).
"""

import argparse
import json
import os
import pathlib
import platform
import subprocess
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
SETTINGS = (
  'default',
  'unbounded',
  'unbounded_no_eigen',
  'unbounded_long_timeouts',
  'unbounded_devices2',
  'none',
)
HANG_GRACE_S = 120  # a worker this long past its deadline is stuck: killed and counted as a hang


def worker(args):
  """One process: runs until --seconds have passed; prints one JSON line per finished run."""
  import jax
  import jax.numpy as jnp
  import numpy as np

  from ckd_jax import recipes
  from ckd_jax.data_parallel import DataParallel
  from ckd_jax.models import get_model
  from ckd_jax.training import (
    create_train_state,
    make_distillation_loss_and_grads,
    make_eval_step,
    make_optimizer,
    make_teacher_forward,
    make_teacher_targets,
    make_train_step,
    model_predict,
  )

  max_in_flight = 0 if args.setting.startswith('unbounded') else None  # None: the library's
  parallel = DataParallel('none' if args.setting == 'none' else 'mesh', max_in_flight=max_in_flight)
  rng = np.random.default_rng(args.seed)
  images = rng.integers(0, 256, (args.batch, args.image, args.image, 3)).astype(np.float32) / 255
  batch = parallel.shard(
    {'image': jnp.asarray(images), 'label': jnp.asarray(rng.integers(0, 10, args.batch), jnp.int32)}
  )
  eval_batch = parallel.shard({**batch, 'mask': jnp.ones(args.batch, jnp.int32)})
  student, teacher = get_model(args.student, 10), get_model(args.teacher, 10)
  tx = make_optimizer(recipes.optimizer(0.05, (2,)), 100, 4)
  shape = (args.image, args.image, 3)
  teacher_variables = parallel.replicate(
    jax.tree.map(lambda x: x[None], create_train_state(teacher, tx, shape, 1).variables)
  )
  deadline, run = time.time() + args.seconds, 0
  while time.time() < deadline:
    start = time.time()
    state = parallel.replicate(create_train_state(student, tx, shape, run))
    add_targets = parallel.compile_batch_fn(
      make_teacher_targets(make_teacher_forward(teacher), 4.0)
    )
    step = parallel.compile(
      make_train_step(make_distillation_loss_and_grads(student, 0.5, 4.0)), donate_state=True
    )
    evaluate = parallel.compile(make_eval_step(model_predict(student)))
    for _ in range(args.steps):
      state, metrics = step(state, add_targets(batch, teacher_variables))
    sums = parallel.unreplicate(evaluate(state.variables, eval_batch))
    parallel.unreplicate(metrics)
    print(
      json.dumps(
        {
          'run': run,
          'seconds': time.time() - start,
          'steps': args.steps,
          'count': float(sums['count']),
        }
      ),
      flush=True,
    )
    run += 1


def _host_devices(count):
  return [f'--xla_force_host_platform_device_count={count}']


def setting_env(setting, base_env):
  """The environment of a worker of `setting`: XLA_FLAGS as the command line would set them."""
  from ckd_jax import data_parallel

  count = data_parallel.host_device_count(0)
  flags = {
    'default': _host_devices(count),
    'unbounded': _host_devices(count),
    'unbounded_no_eigen': _host_devices(count) + ['--xla_cpu_multi_thread_eigen=false'],
    'unbounded_long_timeouts': _host_devices(count)
    + [
      '--xla_cpu_collective_timeout_seconds=900',
      '--xla_cpu_collective_call_terminate_timeout_seconds=900',
    ],
    'unbounded_devices2': _host_devices(2),
    'none': [],
  }[setting]
  return dict(
    base_env,
    JAX_PLATFORMS='cpu',
    PYTHONUNBUFFERED='1',
    XLA_FLAGS=' '.join([base_env.get('XLA_FLAGS', '')] + flags).strip(),
  )


def stress(setting, args, cache_dir, scratch):
  """--processes workers of `setting` side by side for --minutes, each restarted when it dies."""
  env = setting_env(setting, os.environ)
  end = time.time() + 60 * args.minutes
  command = [
    sys.executable,
    __file__,
    '--worker',
    '--setting',
    setting,
    '--compilation_cache_dir',
    cache_dir,
    '--steps',
    str(args.steps),
    '--batch',
    str(args.batch),
    '--image',
    str(args.image),
    '--teacher',
    args.teacher,
    '--student',
    args.student,
  ]
  live, deaths, runs, hangs = {}, [], [], []
  logs = pathlib.Path(scratch) / f'logs-{setting}'
  logs.mkdir(exist_ok=True)

  def start(slot, attempt):
    seconds = max(1, int(end - time.time()))
    out, err = (logs / f'{slot}-{attempt}.{kind}' for kind in ('out', 'err'))
    with open(out, 'w') as stdout, open(err, 'w') as stderr:
      process = subprocess.Popen(
        command + ['--seconds', str(seconds), '--seed', str(slot)],
        env=env,
        stdout=stdout,
        stderr=stderr,
      )
    live[slot] = (process, attempt, out, err)

  for slot in range(args.processes):
    start(slot, 0)
  while live:
    time.sleep(0.5)
    for slot, (process, attempt, out, err) in list(live.items()):
      if process.poll() is None:
        if time.time() > end + HANG_GRACE_S:
          process.kill()
          process.wait()
          hangs.append(slot)
        else:
          continue
      del live[slot]
      runs += [json.loads(line) for line in out.read_text().splitlines() if line.startswith('{')]
      if process.returncode != 0:
        tail = err.read_text()[-2000:]
        kind = (
          'hang'
          if slot in hangs
          else 'collective abort'
          if 'Termination timeout' in tail
          else f'exit {process.returncode}'
        )
        deaths.append(
          {'time': time.time(), 'returncode': process.returncode, 'kind': kind, 'tail': tail[-600:]}
        )
        print(f'[{setting}] worker {slot} died ({kind})', file=sys.stderr, flush=True)
        if end - time.time() > 30:
          start(slot, attempt + 1)
  hours = args.minutes * args.processes / 60
  steady = [r for r in runs if r['run'] > 0] or runs  # the first run of a process compiles
  aborts = sum(d['kind'] == 'collective abort' for d in deaths)
  hung = sum(d['kind'] == 'hang' for d in deaths)
  return {
    'setting': setting,
    'xla_flags': env['XLA_FLAGS'],
    'processes': args.processes,
    'minutes': args.minutes,
    'runs': len(runs),
    'steps': sum(r['steps'] for r in runs),
    'aborts': aborts,
    'hangs': hung,
    'other_deaths': len(deaths) - aborts - hung,
    'aborts_per_hour': aborts / hours if hours else 0.0,
    'ms_per_step': (
      1000 * sum(r['seconds'] for r in steady) / max(1, sum(r['steps'] for r in steady))
    ),
    'deaths': deaths,
  }


def print_table(rows):
  print(
    '| setting | processes × minutes | runs | steps | aborts | hangs | aborts/hour | '
    'ms/step (run) |'
  )
  print('|---|---|---|---|---|---|---|---|')
  for r in rows:
    other = f' (+{r["other_deaths"]} other)' if r['other_deaths'] else ''
    print(
      f'| {r["setting"]} | {r["processes"]} × {r["minutes"]:g} | {r["runs"]} | {r["steps"]} | '
      f'{r["aborts"]}{other} | {r["hangs"]} | {r["aborts_per_hour"]:.2f} | '
      f'{r["ms_per_step"]:.0f} |'
    )


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--settings', default='default')
  parser.add_argument('--minutes', type=float, default=30.0)
  parser.add_argument('--processes', type=int, default=2)
  parser.add_argument('--steps', type=int, default=20, help='KD steps per run')
  parser.add_argument('--batch', type=int, default=64)
  parser.add_argument('--image', type=int, default=32)
  parser.add_argument('--teacher', default='resnet20')
  parser.add_argument('--student', default='resnet8_b')
  parser.add_argument('--out', default=str(HERE / 'results' / 'mesh_stress.json'))
  parser.add_argument('--worker', action='store_true', help=argparse.SUPPRESS)
  parser.add_argument('--setting', default='default', help=argparse.SUPPRESS)
  parser.add_argument('--seconds', type=float, default=60, help=argparse.SUPPRESS)
  parser.add_argument('--seed', type=int, default=0, help=argparse.SUPPRESS)
  parser.add_argument(
    '--compilation_cache_dir',
    default='',
    help="the workers' shared XLA cache (default: a new one per command)",
  )
  args = parser.parse_args(argv)
  if args.worker:
    if args.compilation_cache_dir:
      import jax

      jax.config.update('jax_compilation_cache_dir', args.compilation_cache_dir)
      jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
    return worker(args)
  settings = args.settings.split(',')
  unknown = sorted(set(settings) - set(SETTINGS))
  if unknown:
    parser.error(f'unknown settings {unknown}; choose from {SETTINGS}')
  with tempfile.TemporaryDirectory() as scratch:
    cache_dir = args.compilation_cache_dir or scratch
    rows = [stress(setting, args, cache_dir, scratch) for setting in settings]
  print_table(rows)
  out = pathlib.Path(args.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(
    json.dumps(
      {
        'machine': platform.platform(),
        'cores': os.cpu_count(),
        'date': time.strftime('%Y-%m-%d'),
        'rows': rows,
      },
      indent=1,
    )
  )
  return rows


if __name__ == '__main__':
  main()
