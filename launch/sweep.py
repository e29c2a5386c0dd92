"""A grid of ordinary ckd_jax runs: one job (and one workdir) per point of the grid.

  python launch/sweep.py --config=configs/quickstart.py --root=runs/sweep \
      --grid=seed=0,1 --grid=distill.alpha=0.5,0.9 --local          # one after another, here
  python launch/sweep.py --config=configs/cifar100.py --root=runs/c100 --grid=seed=0,1,2 \
      --slurm --partition=gpu --gpus=1 --hours=24                    # a SLURM job array
  python launch/sweep.py --root=runs/sweep --gather                  # one table over all jobs

Each job is `python -m ckd_jax.main --config=CONFIG --workdir=ROOT/<job> --config.<key>=<value> …`
(plus the flags given after `--`, e.g. `--config.progress=False --compilation_cache_dir=DIR`), so a
job is rerun, resumed or inspected like any run.
`ROOT/sweep.json` lists the jobs. SLURM jobs are submitted through submitit (an array, one task per
job); `--local` runs them here in order and goes on after a failed job. `--gather` reads every job's
workdir (files only, as the report stage does) and writes `ROOT/sweep_results.csv` (every run with
the job's grid values) and `ROOT/sweep_report.md` (mean ± std over the runs that differ only in
their seed).
"""

import argparse
import csv
import itertools
import json
import pathlib
import statistics
import subprocess
import sys

import slurm  # launch/slurm.py, beside this file

from ckd_jax.stages import report
from ckd_jax.workdir import layout
from ckd_jax.workdir.record import read_config

SWEEP_FILE = 'sweep.json'
SEED_KEYS = ('seed',)  # grid keys that replicate rather than change an experiment


def parse_grid(items):
  """['seed=0,1', 'distill.alpha=0.5,0.9'] -> [('seed', ['0', '1']), ('distill.alpha', …)]."""
  grid = []
  for item in items:
    key, sep, values = item.partition('=')
    values = [v for v in values.split(',') if v]
    if not sep or not key or not values:
      raise SystemExit(f'error: bad --grid {item!r}; expected key=v1,v2 (e.g. seed=0,1)')
    if key in dict(grid):
      raise SystemExit(f'error: --grid names {key!r} twice')
    grid.append((key, values))
  return grid


def jobs_of(config, root, grid, extra):
  """One job per point of the grid: its name, its grid values and its command line."""
  jobs = []
  for point in itertools.product(*[[(k, v) for v in values] for k, values in grid]):
    name = '_'.join(f'{k}-{v}' for k, v in point) or 'run'
    command = slurm.main_command(
      config, pathlib.Path(root) / name, [f'--config.{k}={v}' for k, v in point] + list(extra)
    )
    jobs.append({'name': name, 'values': dict(point), 'command': command})
  return jobs


def run_local(jobs):
  """Runs the jobs here, one after another; returns the names of those that failed."""
  failed = []
  for i, job in enumerate(jobs, 1):
    print(f'[{i}/{len(jobs)}] {job["name"]}: {" ".join(job["command"][1:])}', flush=True)
    if subprocess.run(job['command']).returncode:
      print(f'[{i}/{len(jobs)}] {job["name"]} failed; going on with the others', flush=True)
      failed.append(job['name'])
  return failed


def slurm_executor(root, args):
  return slurm.executor(
    pathlib.Path(root) / 'slurm',
    pathlib.Path(root).name,
    partition=args.partition,
    hours=args.hours,
    gpus_per_node=args.gpus_per_node,
    cpus=args.cpus,
    array_parallelism=args.parallel_jobs,
  )


def submit_slurm(jobs, root, args):
  """One SLURM array task per job; returns the SLURM job ids."""
  submitted = slurm_executor(root, args).map_array(slurm.run_command, [j['command'] for j in jobs])
  return [job.job_id for job in submitted]


def gather(root):
  """Every finished run of every job, with the job's grid values, and the table over seeds."""
  root = pathlib.Path(root)
  if not (root / SWEEP_FILE).exists():
    raise SystemExit(
      f'error: {root / SWEEP_FILE} does not exist: start the sweep first (its '
      '--local, --slurm or --dry_run writes it)'
    )
  sweep = json.loads((root / SWEEP_FILE).read_text())
  keys = [k for k, _ in sweep['grid']]
  rows, missing = [], []
  for job in sweep['jobs']:
    workdir = root / job['name']
    if not layout.config_path(workdir).exists():
      missing.append(job['name'])
      continue
    rows += [
      {'job': job['name'], **job['values'], **row}
      for row in report.collect(workdir, read_config(workdir))
    ]
  with open(root / 'sweep_results.csv', 'w', newline='') as f:
    writer = csv.DictWriter(f, fieldnames=['job'] + keys + list(report.CSV_FIELDS))
    writer.writeheader()
    writer.writerows(rows)
  table = _table(rows, [k for k in keys if k not in SEED_KEYS])
  lines = [
    f'# Sweep {root.name}: {len(sweep["jobs"])} jobs',
    '',
    f'Grid: {", ".join(f"`{k}` = {v}" for k, v in sweep["grid"])}. Test accuracy (%) after '
    'the last epoch, mean ± std over the runs that differ only in their seed; every run is '
    'in `sweep_results.csv`.',
    '',
  ] + table
  if missing:
    lines += ['', f'Not started yet (no workdir): {", ".join(missing)}.']
  (root / 'sweep_report.md').write_text('\n'.join(lines) + '\n')
  return rows, missing


def _table(rows, keys):
  groups = {}
  for row in rows:
    group = tuple(row[k] for k in keys) + (row['kind'], row['arch'], row['teacher_choice'])
    groups.setdefault(group, []).append(row['last_test_accuracy'])
  header = keys + ['kind', 'arch', 'teacher choice', 'last test acc (%)', 'runs']
  lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
  for group, values in groups.items():
    mean = 100 * statistics.mean(values)
    spread = 100 * statistics.stdev(values) if len(values) > 1 else 0.0
    cells = [str(v) for v in group] + [f'{mean:.2f} ± {spread:.2f}', str(len(values))]
    lines.append('| ' + ' | '.join(cells) + ' |')
  return lines


def parse_args(argv=None):
  parser = argparse.ArgumentParser(
    description=__doc__.splitlines()[0], epilog='Flags after -- are passed to every job.'
  )
  parser.add_argument('--root', required=True, help='the sweep folder: one workdir per job')
  parser.add_argument('--config', help='a configs/*.py file (optionally :key=value,…)')
  parser.add_argument('--grid', action='append', default=[], help='key=v1,v2 (repeatable)')
  mode = parser.add_mutually_exclusive_group(required=True)
  mode.add_argument('--local', action='store_true', help='run the jobs here, one after another')
  mode.add_argument('--slurm', action='store_true', help='submit a SLURM array (submitit)')
  mode.add_argument('--dry_run', action='store_true', help='write sweep.json, print the commands')
  mode.add_argument('--gather', action='store_true', help='the table over all jobs')
  slurm.add_cluster_flags(parser)  # per job (SLURM)
  parser.add_argument('--parallel_jobs', type=int, default=64, help='array tasks at once (SLURM)')
  ours, extra = slurm.split_extra(sys.argv[1:] if argv is None else argv)
  return parser.parse_args(ours), extra


def main(argv=None):
  args, extra = parse_args(argv)
  root = pathlib.Path(args.root)
  if args.gather:
    rows, missing = gather(root)
    print(
      f'{len(rows)} runs gathered into {root / "sweep_report.md"} and sweep_results.csv'
      + (f'; not started: {missing}' if missing else '')
    )
    return 0
  if not args.config or not args.grid:
    raise SystemExit('error: --config and at least one --grid are needed (except with --gather)')
  grid = parse_grid(args.grid)
  jobs = jobs_of(args.config, root, grid, extra)
  root.mkdir(parents=True, exist_ok=True)
  (root / SWEEP_FILE).write_text(
    json.dumps({'config': args.config, 'grid': grid, 'extra': extra, 'jobs': jobs}, indent=1)
  )
  print(f'{len(jobs)} jobs in {root / SWEEP_FILE}')
  if args.dry_run:
    for job in jobs:
      print(' '.join(job['command'][1:]))
  elif args.local:
    failed = run_local(jobs)
    print(
      f'{len(jobs) - len(failed)} of {len(jobs)} jobs done'
      + (
        f'; failed: {failed} (rerun the same command: finished runs are skipped)'
        if failed
        else f'; gather them with: python launch/sweep.py --root={root} --gather'
      )
    )
    return 1 if failed else 0
  else:
    ids = submit_slurm(jobs, root, args)
    print(f'submitted SLURM jobs {ids}; logs in {root / "slurm"}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
