"""One ckd_jax run over several SLURM nodes, submitted through submitit.

  python launch/slurm.py --config=configs/imagenet.py --workdir=runs/imagenet \
      --nodes=2 --gpus_per_node=8 --partition=gpu --hours=48 [-- --config.teacher.epochs=90]

Each node runs one task, `python -m ckd_jax.main --config=… --workdir=…` on all of its GPUs; the
tasks find each other through SLURM's environment (`jax.distributed`, see ckd_jax/distributed.py)
and train one global mesh, process 0 writing the workdir (on a filesystem every node sees).
A preempted or failed job is resubmitted with the same command: it resumes from the workdir.
`--dry_run` prints the sbatch script and the command without submitting. sweep.py submits its
arrays through `executor` too.
"""

import argparse
import pathlib
import subprocess
import sys


def run_command(command):
  """A SLURM task: one command line (module-level, so that submitit can pickle it)."""
  subprocess.run(command, check=True)


def main_command(config, workdir, extra=()):
  return [
    sys.executable,
    '-m',
    'ckd_jax.main',
    f'--config={config}',
    f'--workdir={workdir}',
    *extra,
  ]


def executor(
  folder,
  name,
  *,
  partition=None,
  hours=24,
  nodes=1,
  gpus_per_node=1,
  cpus=8,
  array_parallelism=None,
):
  """A submitit SLURM executor: `nodes` nodes, one task on each, with all of its GPUs."""
  import submitit  # only submitting needs it

  try:
    result = submitit.AutoExecutor(folder=pathlib.Path(folder) / '%j', cluster='slurm')
  except RuntimeError as e:  # no srun on this machine
    raise SystemExit(f'error: {e} Submit (or --dry_run) from a SLURM login node.') from None
  parameters = dict(
    slurm_partition=partition,
    timeout_min=int(hours * 60),
    nodes=nodes,
    tasks_per_node=1,
    gpus_per_node=gpus_per_node,
    cpus_per_task=cpus,
    name=name,
  )
  if array_parallelism:
    parameters['slurm_array_parallelism'] = array_parallelism
  result.update_parameters(**parameters)
  return result


def split_extra(argv):
  """(our flags, the ckd_jax.main flags after --)."""
  argv = list(argv)
  if '--' not in argv:
    return argv, []
  extra = argv[argv.index('--') + 1 :]
  if not all(e.startswith('--') for e in extra):
    raise SystemExit(f'error: only flags of ckd_jax.main may follow --, got {extra}')
  return argv[: argv.index('--')], extra


def add_cluster_flags(parser):
  parser.add_argument('--partition', help='SLURM partition')
  parser.add_argument('--gpus_per_node', '--gpus', type=int, default=1, help='GPUs per node')
  parser.add_argument('--cpus', type=int, default=8, help='CPUs per task')
  parser.add_argument('--hours', type=float, default=24, help='time limit')


def parse_args(argv=None):
  parser = argparse.ArgumentParser(
    description=__doc__.splitlines()[0], epilog='Flags after -- are passed to ckd_jax.main.'
  )
  parser.add_argument('--config', required=True, help='a configs/*.py file')
  parser.add_argument('--workdir', required=True, help='on a filesystem that every node sees')
  parser.add_argument('--nodes', type=int, default=1, help='nodes (one process each)')
  add_cluster_flags(parser)
  parser.add_argument('--dry_run', action='store_true', help='print the sbatch script only')
  ours, extra = split_extra(sys.argv[1:] if argv is None else argv)
  args = parser.parse_args(ours)
  if args.nodes < 1 or args.gpus_per_node < 0:
    parser.error('--nodes must be >= 1 and --gpus_per_node >= 0')
  return args, extra


def main(argv=None):
  args, extra = parse_args(argv)
  workdir = pathlib.Path(args.workdir)
  command = main_command(args.config, workdir, extra)
  submitter = executor(
    workdir / 'slurm',
    workdir.name,
    partition=args.partition,
    hours=args.hours,
    nodes=args.nodes,
    gpus_per_node=args.gpus_per_node,
    cpus=args.cpus,
  )
  if args.dry_run:
    print(submitter._executor._make_submission_file_text('<submitit task>', '<id>'))
    print(f'# every task runs: {" ".join(command)}')
    return 0
  job = submitter.submit(run_command, command)
  print(
    f'submitted SLURM job {job.job_id} ({args.nodes} nodes × {args.gpus_per_node} GPUs); '
    f'logs in {workdir / "slurm" / str(job.job_id)}'
  )
  return 0


if __name__ == '__main__':
  sys.exit(main())
