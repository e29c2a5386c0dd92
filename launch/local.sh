#!/usr/bin/env bash
# One run on all the devices of this machine: every local GPU (or, on a CPU-only machine, the CPU
# split into host devices), through the default parallel='auto' (one jitted program, batch split).
#   launch/local.sh configs/cifar100.py runs/c100 [--config.<field>=value ...]
set -euo pipefail
if [[ $# -lt 2 ]]; then
  echo "usage: $0 CONFIG WORKDIR [--config.<field>=value ...]" >&2
  exit 2
fi
config=$1 workdir=$2
shift 2
exec python -m ckd_jax.main --config="$config" --workdir="$workdir" "$@"
