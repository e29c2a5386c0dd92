"""Optional TensorBoard scalars next to metrics.jsonl (which stays the record the library reads)."""


class TensorBoardWriter:
  """Writes each epoch record as scalars to `<run_dir>/tensorboard` (needs tensorboardX)."""

  def __init__(self, log_dir):
    try:
      from tensorboardX import SummaryWriter
    except ImportError:
      raise ImportError("config.tensorboard=True needs tensorboardX: pip install -e '.[tensorboard]'"
                        ) from None
    self._writer = SummaryWriter(str(log_dir))

  def write(self, record):
    for key, value in record.items():
      if key not in ('epoch', 'step'):
        self._writer.add_scalar(key, value, record['epoch'])
    self._writer.flush()

  def close(self):
    self._writer.close()
