"""Training-step throughput of ckd_jax, and of the PyTorch reference in the same command.

  python benchmarks/run.py                                   # CPU-sized: resnet20, a few steps
  python benchmarks/run.py --models resnet20,wrn_16_2,wrn_40_2 --torch     # the CPU table
  python benchmarks/run.py --models wrn_40_2 --kd_pairs wrn_40_2-wrn_40_1 --batch 128 \
      --steps 50 --torch                                                    # a GPU

Modes: `teacher` (cross-entropy step of each of --models) and `kd1` / `kd3` (a KD step of each
--kd_pairs student against 1 or 3 frozen teachers: as in the distill stage, the teachers' targets in
a program of their own, then the student step, both timed and their compile times added); `--runs S`
times S such runs stacked into one step (`over_runs`, as `teacher.vectorize` / `distill.vectorize`:
a `vmap` on accelerators, a compiled loop over the runs on the CPU).
Every step is the library's own (`make_train_step` over `make_loss_and_grads` /
`make_distillation_loss_and_grads` after `make_teacher_targets`, Nesterov SGD with weight decay and
the BN update) on a batch already in device memory, so only the step is timed.
Each --parallel setting runs in its own process (on the CPU, `mesh` splits the CPU into
--host_devices devices before JAX starts, which would slow down a single-device run). Per row:
compile s (lowering + XLA compile), ms/step and images/s over --steps steps after a warm-up, and the
memory XLA's analysis of the compiled step needs (arguments + outputs + temporaries; for KD the
larger of its two programs, which run one after the other). --torch adds
benchmarks/torch_reference.py's rows (the same architectures in PyTorch), so that ratios come from
one run on one machine. Prints a table and writes JSON (default benchmarks/results/run.json).
"""

import argparse
import json
import os
import pathlib
import platform
import subprocess
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
MODES = ('teacher', 'kd1', 'kd3')


def measure_jax(arch, mode, args, teacher_arch=None):
  """One row: the compiled step of `mode` for `arch` (the student for KD), timed."""
  import jax
  import numpy as np

  from ckd_jax import recipes
  from ckd_jax.data_parallel import DataParallel
  from ckd_jax.models import get_model
  from ckd_jax.training import (
    create_train_state,
    init_variables,
    make_distillation_loss_and_grads,
    make_loss_and_grads,
    make_multi_step,
    make_optimizer,
    make_teacher_forward,
    make_teacher_targets,
    make_train_step,
    over_runs,
  )

  parallel = DataParallel(args.parallel)
  parallel.check_batch_size(args.batch)
  shape = (args.image, args.image, 3)
  model = get_model(arch, args.classes, axis_name=parallel.axis_name)
  tx = make_optimizer(recipes.optimizer(0.1, (2,)), 10, 4)
  state = create_train_state(model, tx, shape, seed=0)
  inputs, add_targets = (), None
  if mode == 'teacher':
    loss_and_grads = make_loss_and_grads(model, compute_dtype=args.dtype)
  else:
    teacher = get_model(teacher_arch, args.classes)
    members = [init_variables(teacher, shape, seed=k) for k in range(int(mode[2:]))]
    inputs = (jax.tree.map(lambda *x: np.stack(x), *members),)
    add_targets = make_teacher_targets(make_teacher_forward(teacher), 4.0, compute_dtype=args.dtype)
    loss_and_grads = make_distillation_loss_and_grads(model, 0.9, 4.0, compute_dtype=args.dtype)
  rng = np.random.default_rng(0)
  runs, per_call = args.runs, args.steps_per_call
  # S runs: stacked states, batches and inputs, one step; K steps per call: K batches stacked
  lead = (runs,) * (runs > 1) + (per_call,) * (per_call > 1)
  batch = parallel.shard(
    {
      'image': rng.normal(size=lead + (args.batch,) + shape).astype(np.float32),
      'label': rng.integers(0, args.classes, lead + (args.batch,)).astype(np.int32),
    },
    batch_axis=len(lead),
  )
  step = make_train_step(loss_and_grads, parallel.axis_name)
  if per_call > 1:  # as the loop's K-step blocks: one scan of steps, the targets mapped over them
    step = make_multi_step(step)
    if add_targets is not None:
      one_batch_targets = add_targets
      add_targets = lambda batches, *inputs: jax.lax.map(
        lambda b: one_batch_targets(b, *inputs), batches
      )
  if runs > 1:
    step = over_runs(step)
    if add_targets is not None:
      add_targets = over_runs(add_targets)
    stack = lambda tree: jax.tree.map(lambda x: np.stack([np.asarray(x)] * runs), tree)
    state, inputs = stack(state), tuple(stack(x) for x in inputs)
  state = parallel.replicate(state)
  inputs = tuple(parallel.replicate(x) for x in inputs)
  totals = {'compile_s': 0.0, 'peak': None}

  def compile_timed(program, *example_args):
    start = time.perf_counter()
    compiled = program.lower(*example_args).compile()
    totals['compile_s'] += time.perf_counter() - start
    memory = compiled.memory_analysis()
    if memory is not None:
      totals['peak'] = max(
        totals['peak'] or 0,
        int(
          memory.argument_size_in_bytes + memory.output_size_in_bytes + memory.temp_size_in_bytes
        ),
      )
    return compiled

  targets = (
    (lambda batch: batch)
    if mode == 'teacher'
    else compile_timed(parallel.compile_batch_fn(add_targets), batch, *inputs)
  )
  compiled = compile_timed(
    parallel.compile(step, donate_state=True), state, targets(batch, *inputs)
  )
  compile_s, peak = totals['compile_s'], totals['peak']
  for _ in range(args.warmup):
    state, metrics = compiled(state, targets(batch, *inputs))
  jax.block_until_ready(metrics)
  start = time.perf_counter()
  for _ in range(args.steps):
    state, metrics = compiled(state, targets(batch, *inputs))
  jax.block_until_ready(metrics)
  seconds = (time.perf_counter() - start) / (args.steps * per_call)
  return {
    'framework': 'jax',
    'model': arch,
    'teacher': teacher_arch or '',
    'mode': mode,
    'parallel': f'{parallel.mode} x{parallel.num_devices}',
    'dtype': args.dtype,
    'device': jax.devices()[0].device_kind,
    'batch': args.batch,
    'runs': runs,
    'steps_per_call': per_call,
    'images_per_s': runs * args.batch / seconds,
    'ms_per_step': 1000 * seconds,
    'compile_s': compile_s,
    'peak_mib': None if peak is None else peak / 2**20,
  }


def worker(args):
  """One process, one --parallel setting: every requested row as a JSON line on stdout."""
  if args.parallel != 'none':
    from ckd_jax.data_parallel import host_device_count, use_host_devices

    use_host_devices(host_device_count(args.host_devices))
  for arch, teacher_arch, mode in plan(args):
    print(json.dumps(measure_jax(arch, mode, args, teacher_arch)), flush=True)


def plan(args):
  """(model, teacher or None, mode) for every row."""
  rows = []
  for mode in args.modes.split(','):
    if mode not in MODES:
      raise SystemExit(f'unknown mode {mode!r}; choose from {MODES}')
    if mode == 'teacher':
      rows += [(m, None, mode) for m in args.models.split(',')]
    else:
      rows += [(pair.split('-')[1], pair.split('-')[0], mode) for pair in args.kd_pairs.split(',')]
  return rows


def run_rows(command):
  """The JSON rows a child process prints (its other output is shown as it is)."""
  result = subprocess.run(command, capture_output=True, text=True, cwd=HERE.parent)
  rows = []
  for line in result.stdout.splitlines():
    if line.startswith('{'):
      rows.append(json.loads(line))
    else:
      print(line)
  if result.returncode:
    sys.stderr.write(result.stderr[-3000:])
    raise SystemExit(f'{command[1]} failed with exit status {result.returncode}')
  return rows


def print_table(rows):
  header = (
    'framework',
    'model',
    'teacher',
    'mode',
    'runs',
    'K',
    'parallel',
    'dtype',
    'img/s',
    'ms/step',
    'compile s',
    'peak MiB',
  )
  cells = [
    (
      r['framework'],
      r['model'],
      r['teacher'] or '–',
      r['mode'],
      str(r.get('runs', 1)),
      str(r.get('steps_per_call', 1)),
      r['parallel'],
      r['dtype'],
      f'{r["images_per_s"]:.0f}',
      f'{r["ms_per_step"]:.1f}',
      '–' if r['compile_s'] is None else f'{r["compile_s"]:.1f}',
      '–' if r['peak_mib'] is None else f'{r["peak_mib"]:.0f}',
    )
    for r in rows
  ]
  print('| ' + ' | '.join(header) + ' |')
  print('|' + '---|' * len(header))
  for row in cells:
    print('| ' + ' | '.join(row) + ' |')


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--models', default='resnet20', help='teacher-mode models')
  parser.add_argument('--kd_pairs', default='resnet20-resnet8', help='teacher-student pairs (KD)')
  parser.add_argument('--modes', default='teacher,kd1,kd3')
  parser.add_argument('--parallel', default='none,auto', help='settings, each its own process')
  parser.add_argument('--host_devices', type=int, default=0, help='CPU split (0: two per core)')
  parser.add_argument('--batch', type=int, default=128)
  parser.add_argument('--dtype', default='float32', help='ckd_jax compute dtype (bfloat16: GPUs)')
  parser.add_argument(
    '--runs',
    type=int,
    default=1,
    help='ckd_jax only: S runs vectorised into one step (img/s counts all S)',
  )
  parser.add_argument(
    '--steps_per_call',
    type=int,
    default=1,
    help='ckd_jax only: K steps per device call (a scan; ms/step per step)',
  )
  parser.add_argument('--image', type=int, default=32)
  parser.add_argument('--classes', type=int, default=100)
  parser.add_argument('--steps', type=int, default=5)
  parser.add_argument('--warmup', type=int, default=1)
  parser.add_argument('--torch', action='store_true', help='also the PyTorch reference')
  parser.add_argument('--torch_threads', type=int, default=0, help='0: torch default')
  parser.add_argument('--out', default=str(HERE / 'results' / 'run.json'))
  parser.add_argument('--worker', action='store_true', help=argparse.SUPPRESS)
  return parser.parse_args(argv)


def main(argv=None):
  args = parse_args(argv)
  if args.worker:
    return worker(args)
  common = [
    '--models',
    args.models,
    '--kd_pairs',
    args.kd_pairs,
    '--modes',
    args.modes,
    '--batch',
    str(args.batch),
    '--image',
    str(args.image),
    '--classes',
    str(args.classes),
    '--steps',
    str(args.steps),
    '--warmup',
    str(args.warmup),
  ]
  jax_only = [
    '--dtype',
    args.dtype,
    '--runs',
    str(args.runs),
    '--steps_per_call',
    str(args.steps_per_call),
  ]
  rows = []
  for setting in args.parallel.split(','):
    rows += run_rows(
      [
        sys.executable,
        str(HERE / 'run.py'),
        '--worker',
        '--parallel',
        setting,
        '--host_devices',
        str(args.host_devices),
      ]
      + common
      + jax_only
    )
  if args.torch:
    rows += run_rows(
      [sys.executable, str(HERE / 'torch_reference.py'), '--threads', str(args.torch_threads)]
      + common
    )
  print_table(rows)
  out = pathlib.Path(args.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(
    json.dumps(
      {
        'command': ' '.join(sys.argv),
        'machine': platform.platform(),
        'processor': platform.processor(),
        'cpu_count': os.cpu_count(),
        'date': time.strftime('%Y-%m-%d'),
        'rows': rows,
      },
      indent=1,
    )
  )
  print(f'wrote {out}')
  return rows


if __name__ == '__main__':
  main()
