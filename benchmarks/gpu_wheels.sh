#!/usr/bin/env bash
# Prepares .gpu_kit/ for benchmarks/gpu_check.sh on a lent GPU machine (Python 3.12, jax with CUDA,
# no network): the wheels of the packages ckd_jax needs that the machine lacks, one version each,
# and the CIFAR-10 JPEG archive. Run here, where the package registry is reachable:
#   bash benchmarks/gpu_wheels.sh [KIT_DIR]        (default: .gpu_kit, ignored by git)
# The GPU machine takes at most 64 MiB of carried files per call: the kit is the archive (~19 MiB)
# plus a few pure-Python wheels (well under 1 MiB); the script prints its size.
set -euo pipefail
cd "$(dirname "$0")/.."
kit="${1:-.gpu_kit}"
# The GPU image's packages (device/KINDS.md) cover every requirement of setup.py except these:
WHEELS=(ml_collections==1.1.0)
# Requirements that the image already has (any version that setup.py's lower bounds accept):
PREINSTALLED=(jax flax optax orbax-checkpoint chex absl-py numpy scipy scikit-learn pillow tqdm
              matplotlib)
# Requirements imported lazily by paths the check does not take (tfds source, streamed folders):
NOT_NEEDED=(tensorflow-datasets grain)
if [[ "${1:-}" == "--list" ]]; then  # for tests/test_benchmarks.py
  echo "wheels: ${WHEELS[*]}"; echo "preinstalled: ${PREINSTALLED[*]}"
  echo "not_needed: ${NOT_NEEDED[*]}"; exit 0
fi
mkdir -p "$kit/wheels"
rm -f "$kit"/wheels/*.whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d "$kit/wheels" "${WHEELS[@]}"
archive=../shared/data/cifar10-jpeg/cifar10-jpeg.tar.gz
if [[ -f "$archive" ]]; then
  install -m 0644 "$archive" "$kit/cifar10-jpeg.tar.gz"
else
  echo "warning: no $archive here; pass --data to gpu_check.sh on the GPU machine" >&2
fi
ls -l "$kit/wheels"
echo "kit: $(du -sh "$kit" | cut -f1) in $kit (carry it: run(carry=['$kit'], ...))"
