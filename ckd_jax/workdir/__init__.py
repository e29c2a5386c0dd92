"""The workdir: its layout (every file name once), the lock, the config record and manifest, and
atomic JSON files. Nothing here imports JAX, so the report can use it alone."""

from ckd_jax.workdir import layout
from ckd_jax.workdir.files import read_json, read_jsonl, write_json, write_text
from ckd_jax.workdir.lock import WorkdirLockedError, workdir_lock
from ckd_jax.workdir.record import check_workdir, config_differences, read_config, record_stage
