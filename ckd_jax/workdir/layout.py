"""Every file and folder name of a workdir, written once: all other modules ask here.

    <workdir>/config.json                         the resolved config of the run
    <workdir>/manifest.json                       when each stage finished, durations, versions
    <workdir>/.lock                               held by the process that uses the workdir
    <workdir>/xla_cache/                          compiled XLA programs (the CLI's default cache)
    <workdir>/teachers/<arch>_seed<k>/            one teacher run (see RunFiles)
    <workdir>/selection/mi.json, mi.png           the select stage
    <workdir>/students/<student>_from_<choice>_seed<k>/
                                                  one student run (see RunFiles)
    <workdir>/report.md, results.csv, *.png       the report stage

Pure path arithmetic: nothing here touches the disk, so it can be imported anywhere.
"""

import pathlib

STAGES = ('teacher', 'select', 'distill', 'report')  # in the order they run
CONFIG = 'config.json'
MANIFEST = 'manifest.json'
LOCK = '.lock'
XLA_CACHE = 'xla_cache'
REPORT = 'report.md'
RESULTS_CSV = 'results.csv'
TEACHER_PLOT = 'teacher_accuracy.png'
STUDENTS_PLOT = 'students_vs_teacher_epoch.png'
SELECTION_DIR = 'selection'
MI_JSON = 'mi.json'
MI_PLOT = 'mi.png'


class RunFiles:
  """The files of one training run (a teacher or a student)."""

  def __init__(self, run_dir):
    self.dir = pathlib.Path(run_dir)

  @property
  def metrics(self):
    """One JSON record per epoch."""
    return self.dir / 'metrics.jsonl'

  @property
  def final(self):
    """Written last: its presence means the run is finished."""
    return self.dir / 'final.json'

  @property
  def snapshots(self):
    """Orbax snapshots kept forever, one folder per epoch."""
    return self.dir / 'snapshots'

  def snapshot(self, epoch):
    return self.snapshots / str(epoch)

  @property
  def resume(self):
    """The rolling resume checkpoint; removed when the run finishes."""
    return self.dir / 'resume'

  @property
  def tensorboard(self):
    return self.dir / 'tensorboard'

  def is_finished(self):
    return self.final.exists()


def teacher_run_dir(workdir, arch, seed):
  return pathlib.Path(workdir) / 'teachers' / f'{arch}_seed{seed}'


def student_run_dir(workdir, student, choice_slug, seed):
  """`choice_slug` is a file-name-safe teacher choice, e.g. 'epoch60' (TeacherChoice.slug)."""
  return pathlib.Path(workdir) / 'students' / f'{student}_from_{choice_slug}_seed{seed}'


def selection_dir(workdir):
  return pathlib.Path(workdir) / SELECTION_DIR


def selection_path(workdir):
  return selection_dir(workdir) / MI_JSON


def selection_plot_path(workdir):
  return selection_dir(workdir) / MI_PLOT


def config_path(workdir):
  return pathlib.Path(workdir) / CONFIG


def manifest_path(workdir):
  return pathlib.Path(workdir) / MANIFEST


def lock_path(workdir):
  return pathlib.Path(workdir) / LOCK


def xla_cache_dir(workdir):
  return pathlib.Path(workdir) / XLA_CACHE
