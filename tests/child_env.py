"""XLA flags and compilation cache of the tests, and the environment of the command-line
processes they start."""

import os
import pathlib
import tempfile

HOST_DEVICES = '--xla_force_host_platform_device_count=8'  # for the pmap and mesh tests
# Compiling, not running, is most of the tests' time. Two XLA options save the tests' tiny
# programs more compile time than they cost in running: no LLVM optimisations (XLA's own graph
# passes still run, so the programs compute the same functions), and the CPU's classic fusion
# emitters instead of the MLIR ones. Both change float rounding, so trajectories differ in their
# last bits from a user's run; the split-run tests' smooth learning rate depends on that rounding
# (pipeline_configs.py). Measured in benchmarks/RESULTS.md
# (2026-12-04). XLA aborts on a flag it does not know: drop the second when a jaxlib retires it.
FAST_COMPILE = '--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false'
# Shared by the test processes and the command lines they start: a rerun of the suite compiles
# little (cache keys include the flags, so the children's entries never collide with the tests').
XLA_CACHE = pathlib.Path(tempfile.gettempdir()) / 'ckd_jax_test_xla_cache'


def without_host_devices():
  """os.environ for a child process whose config or flags decide its device count: the tests' XLA
  flags without their 8 host devices."""
  flags = os.environ.get('XLA_FLAGS', '').replace(HOST_DEVICES, '')
  return dict(os.environ, XLA_FLAGS=' '.join(flags.split()))
