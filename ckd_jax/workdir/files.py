"""Reading, writing and removing the workdir's files. Writes are atomic: a kill mid-write never
leaves half a file, since a reader sees either the old or the new content. With several processes
only process 0 writes or removes (`distributed.primary_only`)."""

import json
import pathlib
import shutil

from ckd_jax.distributed import primary_only


@primary_only
def write_text(path, text):
  """Writes `text` to a temporary file beside `path`, then renames it over `path` (process 0
  only, as every write)."""
  path = pathlib.Path(path)
  tmp = path.with_name(path.name + '.tmp')
  tmp.write_text(text)
  tmp.replace(path)


def write_json(path, obj):
  write_text(path, json.dumps(obj, indent=2, sort_keys=True))


class DamagedFileError(ValueError):
  """A workdir file that does not parse; the message names it and says what to do."""


def read_json(path, what_to_do='delete it and rerun the stage that writes it'):
  path = pathlib.Path(path)
  try:
    return json.loads(path.read_text())
  except json.JSONDecodeError as e:
    raise DamagedFileError(
      f'{path} is damaged ({e.msg} at line {e.lineno}): {what_to_do}'
    ) from None


def read_jsonl(path, drop_torn_tail=False):
  """The records of a JSON-lines file; [] when it does not exist yet. A last line cut short (a
  kill or a full disk during the append) is dropped with `drop_torn_tail` (a resume redoes
  it), else refused with the file named, like any other damaged line."""
  path = pathlib.Path(path)
  if not path.exists():
    return []
  text = path.read_text()
  lines = text.splitlines()
  records = []
  for number, line in enumerate(lines, 1):
    if not line.strip():
      continue
    try:
      records.append(json.loads(line))
    except json.JSONDecodeError as e:
      torn = number == len(lines) and not text.endswith('\n')
      if torn and drop_torn_tail:
        break
      cause = 'its last line was cut short' if torn else f'line {number}: {e.msg}'
      raise DamagedFileError(
        f'{path} is damaged ({cause}): rerun the same command, which '
        'resumes the run and repairs it, or delete the run folder to train '
        'it again'
      ) from None
  return records


def jsonl_text(records):
  return ''.join(json.dumps(r, sort_keys=True) + '\n' for r in records)


def write_jsonl(path, records):
  write_text(path, jsonl_text(records))


@primary_only
def append_jsonl(path, record):
  with pathlib.Path(path).open('a') as f:
    f.write(jsonl_text([record]))


@primary_only
def remove_file(path):
  pathlib.Path(path).unlink()


@primary_only
def remove_tree(path):
  shutil.rmtree(path, ignore_errors=True)
