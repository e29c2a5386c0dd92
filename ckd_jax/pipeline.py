"""The order of the stages, and `run`: validate everything, record the config, run the stages.

Each stage skips its finished work (a run with final.json is done) and resumes unfinished work, so
rerunning the same command after a kill continues where it stopped.
"""

import time

from ckd_jax import config_checks
from ckd_jax.distributed import sync
from ckd_jax.stages import distill, report, select, teacher
from ckd_jax.workdir import check_workdir, record_stage, workdir_lock

STAGES = {
  'teacher': teacher.run,
  'select': select.run,
  'distill': distill.run,
  'report': report.run,
}
assert tuple(STAGES) == config_checks.STAGES


def run(config, workdir, allow_config_change=False):
  """Validates everything first, records the config, then runs `config.stages` in order."""
  config_checks.validate(config)
  with workdir_lock(workdir):
    config_checks.check_inputs(config, workdir)
    check_workdir(config, workdir, allow_config_change)
    sync('workdir checked')
    for stage in config_checks.parse_stages(config.stages):
      start, finished = time.time(), False
      try:
        STAGES[stage](config, workdir)
        finished = True
      finally:  # an interrupted leg's time counts too
        record_stage(workdir, stage, time.time() - start, finished)
      sync(f'{stage} done')  # a later stage reads what process 0 wrote
