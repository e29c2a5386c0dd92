"""The prepared GPU check: the training-step table and every pipeline stage, in one command.

  bash benchmarks/gpu_wheels.sh                  # here, with network: .gpu_kit/ (wheels + data)
  bash benchmarks/gpu_check.sh OUTDIR            # there (device run, carry .gpu_kit): ~8 min
  bash benchmarks/gpu_check.sh --cpu OUTDIR      # the same steps in CPU size (tests run it)

Rows of the step table (benchmarks/run.py's own measurement, one process): the WRN-40-2 teacher step
in float32 and bfloat16, K = 10 steps per call, KD WRN-40-2 -> WRN-40-1 with 1 and 3 teachers, 5
students stacked into one step, and the PyTorch reference of the same models when torch is
installed. Then a short end-to-end run of the command line (teacher 2 epochs with 2 snapshots,
select, one student for 1 epoch, report) on the CIFAR-10 JPEG copy (--data: its .tar.gz or the
unpacked folder; --cpu: the quick-start's digits). Writes OUTDIR/gpu_check.json and
OUTDIR/gpu_check.md; exits non-zero if any part failed, after writing what it has.
"""

import argparse
import json
import os
import pathlib
import platform
import subprocess
import sys
import tarfile
import time

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
import run as step_benchmark  # noqa: E402  (benchmarks/ is not a package)

# The CPU form keeps every kind of row at toy size; bfloat16 compiles slowly on the CPU and is
# no faster there, so its rows run in float32 (the dtype column says so).
GPU_SIZE = dict(
  teacher='wrn_40_2',
  student='wrn_40_1',
  batch=128,
  image=32,
  classes=100,
  steps=50,
  warmup=3,
  low_dtype='bfloat16',
  steps_per_call=10,
  stacked=5,
)
CPU_SIZE = dict(
  teacher='resnet8',
  student='resnet8',
  batch=8,
  image=8,
  classes=10,
  steps=1,
  warmup=1,
  low_dtype='float32',
  steps_per_call=2,
  stacked=2,
)


def planned_rows(size):
  """(label, mode, run.py options): the table the issue asks for, in this order."""
  low, k, stacked = size['low_dtype'], size['steps_per_call'], size['stacked']
  dtype = ['--dtype', low]
  rows = [('teacher float32', 'teacher', [])]
  if low != 'float32':
    rows.append((f'teacher {low}', 'teacher', dtype))
  return rows + [
    (f'teacher {low}, K={k}', 'teacher', dtype + ['--steps_per_call', str(k)]),
    (f'KD 1 teacher {low}', 'kd1', dtype),
    (f'KD 3 teachers {low}', 'kd3', dtype),
    (f'KD 1 teacher {low}, {stacked} students stacked', 'kd1', dtype + ['--runs', str(stacked)]),
  ]


def _size_args(size):
  """The step table's sizes as the arguments that both benchmark scripts take."""
  return [f'--{key}={size[key]}' for key in ('batch', 'image', 'classes', 'steps', 'warmup')]


def step_rows(size):
  """Every planned row, measured in this process (one device, no mesh)."""
  rows = []
  for label, mode, extra in planned_rows(size):
    args = step_benchmark.parse_args(['--parallel', 'none', *_size_args(size), *extra])
    arch = size['teacher'] if mode == 'teacher' else size['student']
    teacher = None if mode == 'teacher' else size['teacher']
    print(f'step table: {label}', flush=True)
    rows.append({'label': label, **step_benchmark.measure_jax(arch, mode, args, teacher)})
  return rows


def torch_rows(size):
  """The PyTorch reference of the teacher and KD rows, if torch is installed (else none)."""
  try:
    import torch  # noqa: F401
  except ImportError:
    print('step table: no torch here, so no PyTorch reference rows', flush=True)
    return []
  return step_benchmark.run_rows(
    [
      sys.executable,
      str(HERE / 'torch_reference.py'),
      '--models',
      size['teacher'],
      '--kd_pairs',
      f'{size["teacher"]}-{size["student"]}',
      '--modes',
      'teacher,kd1,kd3',
      *_size_args(size),
    ]
  )


def unpacked(data, scratch):
  """The image-folder root of --data: the folder itself, or the .tar.gz unpacked into `scratch`."""
  data = pathlib.Path(data)
  if data.is_dir():
    return data
  target = scratch / 'cifar10-jpeg'
  if not (target / 'test').is_dir():
    print(f'unpacking {data} into {target}', flush=True)
    target.mkdir(parents=True, exist_ok=True)
    with tarfile.open(data) as archive:
      archive.extractall(target, filter='data')
  return target


def pipeline_command(workdir, cpu, data_root):
  """The command line of the end-to-end run: every stage, shortened."""
  if cpu:
    config = [
      '--config=configs/quickstart.py',
      '--config.teacher.arch=resnet8_b',
      '--config.distill.student=resnet8_b',
      '--config.data.train_examples=256',
      '--config.data.test_examples=120',
      '--config.select.method=kde',
    ]
  else:
    config = [
      f'--config=configs/cifar10_jpeg.py:root={data_root},teacher=wrn_40_2,'
      'student=wrn_40_1,train_examples=10000,epochs=10,batch_size=128',
      '--config.data.test_examples=2000',
      '--config.select.num_samples=2000',
      '--config.select.fit_samples=2000',
    ]
  # an XLA cache given to this process (the tests' shared one) serves the command line too
  cache = os.environ.get('JAX_COMPILATION_CACHE_DIR')
  config += [f'--compilation_cache_dir={cache}'] if cache else []
  return [
    sys.executable,
    '-m',
    'ckd_jax.main',
    f'--workdir={workdir}',
    *config,
    '--config.progress=False',
    '--config.teacher.num_seeds=1',
    '--config.teacher.epochs=2',
    '--config.teacher.snapshot_epochs=(1,2)',
    '--config.teacher.optimizer.milestones=(1,)',
    '--config.distill.num_seeds=1',
    '--config.distill.epochs=1',
    '--config.distill.optimizer.milestones=()',
    "--config.distill.teachers=('selected',)",
    '--config.select.repeats=2',
  ]


def end_to_end(outdir, cpu, data):
  """Runs the pipeline's command line; returns its summary (stage times, the student's result)."""
  workdir = outdir / 'pipeline'
  data_root = None if cpu else unpacked(data, outdir / 'data')
  command = pipeline_command(workdir, cpu, data_root)
  print('end to end: ' + ' '.join(command[1:]), flush=True)
  start = time.time()
  result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
  (outdir / 'pipeline.log').write_text(result.stdout + result.stderr)
  summary = {
    'command': ' '.join(command[1:]),
    'returncode': result.returncode,
    'seconds': time.time() - start,
  }
  if result.returncode:
    summary['error'] = (result.stderr or result.stdout)[-2000:]
    return summary
  stages = json.loads((workdir / 'manifest.json').read_text()).get('stages', {})
  summary['stage_seconds'] = {name: info.get('duration_s') for name, info in stages.items()}
  finals = sorted(workdir.glob('students/*/final.json'))
  summary['students'] = {p.parent.name: json.loads(p.read_text()) for p in finals}
  summary['report'] = (workdir / 'report.md').is_file()
  return summary


def markdown(result):
  lines = [
    f'# GPU check, {result["date"]}',
    '',
    f'device: {result["device"]}',
    '',
    '| row | framework | model | teacher | runs | K | dtype | img/s | ms/step | compile s |'
    ' peak MiB |',
    '|---|---|---|---|---|---|---|---|---|---|---|',
  ]
  for r in result['steps']:
    peak = '–' if r['peak_mib'] is None else f'{r["peak_mib"]:.0f}'
    compile_s = '–' if r['compile_s'] is None else f'{r["compile_s"]:.1f}'
    lines.append(
      f'| {r.get("label", r["mode"] + " " + r["parallel"])} | {r["framework"]} | '
      f'{r["model"]} | {r["teacher"] or "–"} | {r.get("runs", 1)} | '
      f'{r.get("steps_per_call", 1)} | {r["dtype"]} | {r["images_per_s"]:.0f} | '
      f'{r["ms_per_step"]:.2f} | {compile_s} | {peak} |'
    )
  e2e = result['end_to_end']
  lines += [
    '',
    f'end to end ({e2e["seconds"]:.0f} s, exit {e2e["returncode"]}): `{e2e["command"]}`',
  ]
  for stage, seconds in e2e.get('stage_seconds', {}).items():
    lines.append(f'- {stage}: {seconds:.1f} s')
  for name, final in e2e.get('students', {}).items():
    lines.append(
      f'- {name}: last test accuracy {final.get("last_test_accuracy", float("nan")):.4f}'
    )
  if 'error' in e2e:
    lines += ['', '```', e2e['error'], '```']
  for failure in result['failures']:
    lines.append(f'- FAILED: {failure}')
  return '\n'.join(lines) + '\n'


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('outdir')
  parser.add_argument('--cpu', action='store_true', help='CPU size: tiny models, a few steps')
  parser.add_argument(
    '--data',
    default=str(ROOT / '.gpu_kit' / 'cifar10-jpeg.tar.gz'),
    help='CIFAR-10 JPEG: the .tar.gz or the unpacked folder (not with --cpu)',
  )
  args = parser.parse_args(argv)
  outdir = pathlib.Path(args.outdir).resolve()
  outdir.mkdir(parents=True, exist_ok=True)
  if not args.cpu and not pathlib.Path(args.data).exists():
    raise SystemExit(
      f'error: no CIFAR-10 JPEG data at {args.data}: run '
      'benchmarks/gpu_wheels.sh here first (it copies it into .gpu_kit/), or pass '
      '--data'
    )
  import jax

  size = CPU_SIZE if args.cpu else GPU_SIZE
  result = {
    'date': time.strftime('%Y-%m-%d %H:%M'),
    'machine': platform.platform(),
    'device': f'{jax.devices()[0].device_kind} ({jax.default_backend()}), jax {jax.__version__}',
    'size': size,
    'failures': [],
  }
  try:
    result['steps'] = step_rows(size) + torch_rows(size)
  except Exception as e:  # keep going: the pipeline run is the other half of the check
    result['steps'] = []
    result['failures'].append(f'step table: {type(e).__name__}: {e}')
  result['end_to_end'] = end_to_end(outdir, args.cpu, args.data)
  if result['end_to_end']['returncode']:
    result['failures'].append('end to end: the command line failed (see pipeline.log)')
  (outdir / 'gpu_check.json').write_text(json.dumps(result, indent=1))
  (outdir / 'gpu_check.md').write_text(markdown(result))
  print(markdown(result))
  if result['failures']:
    raise SystemExit('gpu check FAILED: ' + '; '.join(result['failures']))
  return result


if __name__ == '__main__':
  main()
