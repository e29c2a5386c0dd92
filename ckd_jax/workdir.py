"""The workdir layout (README: Workdir) in one place: every stage finds its inputs here."""
import json
import pathlib


def teacher_run_dir(workdir, arch, seed):
  return pathlib.Path(workdir) / 'teachers' / f'{arch}_seed{seed}'


def student_run_dir(workdir, student, choice, seed):
  """`choice` is a teacher_choices.TeacherChoice."""
  return pathlib.Path(workdir) / 'students' / f'{student}_from_{choice.slug}_seed{seed}'


def selection_path(workdir):
  return pathlib.Path(workdir) / 'selection' / 'mi.json'


def read_chosen_epoch(workdir):
  """T*'s epoch, written by the select stage."""
  path = selection_path(workdir)
  if not path.exists():
    raise ValueError(f"teacher choice 'selected' needs {path}: run the select stage first")
  return json.loads(path.read_text())['chosen_epoch']
