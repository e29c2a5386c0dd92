"""Time and memory of each MI estimator versus the number of snapshots and samples.

  python benchmarks/mi_estimators.py                     # CPU-sized grid, ~2 min
  python benchmarks/mi_estimators.py --snapshots 1,10,20 --samples 10000 --steps 1000   # GPU

Features are synthetic (S, N, d) arrays so that only the estimator is measured. Per configuration:
compile time, the best of `--repeats` timed runs of the compiled program, and XLA's memory analysis
of that program (arguments + outputs + temporaries: the peak it needs on the device). Prints a table
and writes JSON (default benchmarks/results/mi_estimators.json).
"""

import argparse
import json
import pathlib
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np

from ckd_jax import mi


def measure(method, snapshots, samples, dim, classes, pixels, steps, repeats, kde_noise='auto'):
  rng = np.random.default_rng(0)
  feats = jnp.asarray(rng.normal(size=(snapshots, samples, dim)), jnp.float32)
  labels = jnp.asarray(rng.integers(0, classes, samples), jnp.int32)
  images = jnp.asarray(rng.random((samples, pixels)), jnp.float32)
  settings = {
    'kde': dict(noise_variance=kde_noise, chunk_size=1024),
    'binning': dict(num_bins=30),
    'variational': dict(seed=0, probe=dict(steps=steps), decoder=dict(steps=steps)),
  }
  plan = mi.repeat_plan(samples)  # one estimate on all samples
  args = (
    (feats, labels, feats, labels, images, images, *plan)
    if method == 'variational'
    else (feats, labels, feats, labels, None, None, *plan)
  )
  start = time.perf_counter()
  compiled = mi.StackedEstimator(method, classes, **settings[method]).lower(*args).compile()
  compile_s = time.perf_counter() - start
  memory = compiled.memory_analysis()
  peak = (
    None
    if memory is None
    else int(
      memory.argument_size_in_bytes + memory.output_size_in_bytes + memory.temp_size_in_bytes
    )
  )
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(compiled(*args))
    times.append(time.perf_counter() - start)
  return {
    'method': method,
    'snapshots': snapshots,
    'samples': samples,
    'dim': dim,
    'classes': classes,
    'steps': steps if method == 'variational' else None,
    'compile_s': compile_s,
    'run_s': min(times),
    'run_s_per_snapshot': min(times) / snapshots,
    'peak_bytes': peak,
  }


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--methods', default='kde,binning,variational')
  parser.add_argument('--snapshots', default='1,4,10')
  parser.add_argument('--samples', default='1000,4000')
  parser.add_argument('--dim', type=int, default=128)
  parser.add_argument('--classes', type=int, default=100)
  parser.add_argument('--pixels', type=int, default=3072, help='flattened image size (decoder)')
  parser.add_argument('--steps', type=int, default=100, help='variational fitting steps')
  parser.add_argument('--repeats', type=int, default=3)
  parser.add_argument(
    '--kde_noise', default='auto', help="kde's noise variance: 'auto' or a number"
  )
  parser.add_argument('--out', default='benchmarks/results/mi_estimators.json')
  args = parser.parse_args()
  rows = []
  print(
    f'{"method":<12} {"S":>3} {"N":>6} {"compile s":>10} {"run s":>9} {"s/snapshot":>11} '
    f'{"peak MiB":>9}'
  )
  for method in args.methods.split(','):
    for samples in (int(n) for n in args.samples.split(',')):
      for snapshots in (int(s) for s in args.snapshots.split(',')):
        row = measure(
          method,
          snapshots,
          samples,
          args.dim,
          args.classes,
          args.pixels,
          args.steps,
          args.repeats,
          args.kde_noise,
        )
        rows.append(row)
        peak = '-' if row['peak_bytes'] is None else f'{row["peak_bytes"] / 2**20:.1f}'
        print(
          f'{method:<12} {snapshots:>3} {samples:>6} {row["compile_s"]:>10.2f} '
          f'{row["run_s"]:>9.3f} {row["run_s_per_snapshot"]:>11.4f} {peak:>9}',
          flush=True,
        )
  out = pathlib.Path(args.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(
    json.dumps(
      {
        'device': str(jax.devices()[0]),
        'platform': platform.platform(),
        'jax': jax.__version__,
        'rows': rows,
      },
      indent=2,
    )
  )
  print(f'wrote {out}')


if __name__ == '__main__':
  main()
