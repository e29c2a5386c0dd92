#!/usr/bin/env bash
# The prepared GPU check (benchmarks/gpu_check.py says what it measures):
#   bash benchmarks/gpu_check.sh [--cpu] OUTDIR [--data PATH]
# On a machine with jax but without ckd_jax's other requirements, it first installs the wheels
# that benchmarks/gpu_wheels.sh put in .gpu_kit/wheels (no network needed), into a folder of its
# own; the project itself runs from this checkout.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! python3 -c 'import ml_collections' 2>/dev/null; then
  if ! ls .gpu_kit/wheels/*.whl >/dev/null 2>&1; then
    echo "error: ml_collections is missing and .gpu_kit/wheels holds no wheels: run" \
         "benchmarks/gpu_wheels.sh where pip works, then carry .gpu_kit" >&2
    exit 1
  fi
  site="${TMPDIR:-/tmp}/ckd_jax_gpu_site"
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$site" .gpu_kit/wheels/*.whl
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
exec python3 benchmarks/gpu_check.py "$@"
