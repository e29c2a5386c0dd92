"""Teacher choices of the distill stage, parsed from strings in `config.distill.teachers`.

'none'                         no teacher: the cross-entropy "student alone" baseline
'epoch:E'                      the snapshot at epoch E of teacher seed 0 (T0.3 = 'epoch:60', …)
'final'                        the last snapshot of teacher seed 0 (T_full)
'snapshot_ensemble:E1,E2,…'    an ensemble of snapshots of teacher seed 0
'full_ensemble:M'              an ensemble of the final snapshots of teacher seeds 0..M-1
'selected'                     T*, the snapshot of teacher seed 0 chosen by the select stage
"""

import dataclasses
import re

from ckd_jax.workdir.files import read_json
from ckd_jax.workdir.layout import selection_path, teacher_run_dir

KINDS = ('none', 'epoch', 'final', 'snapshot_ensemble', 'full_ensemble', 'selected')


@dataclasses.dataclass(frozen=True)
class TeacherChoice:
  spec: str
  kind: str
  members: tuple  # ((teacher seed offset k, epoch), ...); empty for 'none' and 'selected'

  @property
  def slug(self):
    return slug(self.spec)


def slug(spec):
  """A file-name-safe name of a choice: 'epoch60', 'final', 'snapshot_ensemble_100_140_200', …"""
  return re.sub(r'[^0-9a-zA-Z]+', '_', spec.replace('epoch:', 'epoch')).strip('_')


def _epochs(text, spec):
  try:
    return [int(e) for e in text.split(',')]
  except ValueError:
    raise ValueError(f'teacher choice {spec!r}: epochs must be integers') from None


def parse(spec, teacher_config):
  """Parses and checks one choice against the teacher config (snapshot epochs, number of seeds)."""
  kind, _, arg = spec.partition(':')
  snapshot_epochs = tuple(teacher_config.snapshot_epochs)
  if kind == 'none' and not arg:
    members = ()
  elif kind == 'final' and not arg:
    members = ((0, teacher_config.epochs),)
  elif kind == 'epoch' and arg:
    members = tuple((0, e) for e in _epochs(arg, spec))
    if len(members) != 1:
      raise ValueError(f'teacher choice {spec!r}: one epoch expected (use snapshot_ensemble:…)')
  elif kind == 'snapshot_ensemble' and arg:
    members = tuple((0, e) for e in _epochs(arg, spec))
  elif kind == 'full_ensemble' and arg:
    size = _epochs(arg, spec)[0]
    if size < 1:
      raise ValueError(f'teacher choice {spec!r}: an ensemble needs at least one teacher')
    if size > teacher_config.num_seeds:
      raise ValueError(
        f'teacher choice {spec!r} needs {size} teacher seeds but '
        f'teacher.num_seeds = {teacher_config.num_seeds}'
      )
    members = tuple((k, teacher_config.epochs) for k in range(size))
  elif kind == 'selected' and not arg:
    members = ()  # known once the select stage has written selection/mi.json
  else:
    raise ValueError(
      f'bad teacher choice {spec!r}; forms: none, final, epoch:E, '
      'snapshot_ensemble:E1,E2,…, full_ensemble:M, selected'
    )
  if kind == 'snapshot_ensemble' and not members:
    raise ValueError(f'teacher choice {spec!r}: an ensemble needs at least one teacher')
  for _, epoch in members:
    if epoch not in snapshot_epochs:
      raise ValueError(
        f'teacher choice {spec!r}: no snapshot is kept at epoch {epoch} '
        f'(teacher.snapshot_epochs = {snapshot_epochs})'
      )
  return TeacherChoice(spec, kind, members)


def parse_all(specs, teacher_config):
  if isinstance(specs, str) or not specs:
    raise ValueError(
      'config.distill.teachers must be a non-empty tuple of strings, e.g. '
      "('epoch:60', 'final', 'none')"
    )
  choices = [parse(s, teacher_config) for s in specs]
  slugs = [c.slug for c in choices]
  if len(set(slugs)) != len(slugs):
    raise ValueError(f'config.distill.teachers lists a choice twice: {list(specs)}')
  return choices


def read_chosen_epoch(workdir):
  """T*'s epoch, written by the select stage."""
  path = selection_path(workdir)
  if not path.exists():
    raise ValueError(f"teacher choice 'selected' needs {path}: run the select stage first")
  return read_json(path, 'rerun the select stage (add it to --config.stages), which recomputes it')[
    'chosen_epoch'
  ]


def member_paths(choice, workdir, teacher_config, base_seed):
  """[(teacher run_dir, epoch)] of the snapshots that make up this choice (T* for 'selected',
  which raises if the select stage has not run)."""
  members = ((0, read_chosen_epoch(workdir)),) if choice.kind == 'selected' else choice.members
  return [
    (teacher_run_dir(workdir, teacher_config.arch, base_seed + k), epoch) for k, epoch in members
  ]
