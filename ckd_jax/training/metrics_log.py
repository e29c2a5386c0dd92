"""metrics.jsonl: one JSON line per epoch, easy to read with pandas or plot."""
import json
import pathlib


class MetricsLog:
  def __init__(self, path):
    self.path = pathlib.Path(path)

  def read(self):
    if not self.path.exists():
      return []
    return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]

  def append(self, record):
    with self.path.open('a') as f:
      f.write(json.dumps(record, sort_keys=True) + '\n')

  def truncate_after(self, epoch):
    """Drops epochs a killed run logged after its last resume checkpoint (they will be redone)."""
    records = self.read()
    kept = [r for r in records if r['epoch'] <= epoch]
    if len(kept) != len(records):
      tmp = self.path.with_suffix('.tmp')
      tmp.write_text(''.join(json.dumps(r, sort_keys=True) + '\n' for r in kept))
      tmp.replace(self.path)
