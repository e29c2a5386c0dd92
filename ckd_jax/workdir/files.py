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


def read_json(path):
  return json.loads(pathlib.Path(path).read_text())


def read_jsonl(path):
  """The records of a JSON-lines file; [] when it does not exist yet."""
  path = pathlib.Path(path)
  if not path.exists():
    return []
  return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write_jsonl(path, records):
  write_text(path, ''.join(json.dumps(r, sort_keys=True) + '\n' for r in records))


@primary_only
def append_jsonl(path, record):
  with pathlib.Path(path).open('a') as f:
    f.write(json.dumps(record, sort_keys=True) + '\n')


@primary_only
def remove_file(path):
  pathlib.Path(path).unlink()


@primary_only
def remove_tree(path):
  shutil.rmtree(path, ignore_errors=True)
