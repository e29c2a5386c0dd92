"""The stages' console summaries: the select stage's MI table, the estimators compared, the distill
stage's students. Plain text from the same rows as the report (`report`), printed as each stage
ends.
"""

from ckd_jax.stages import report
from ckd_jax.workdir.record import read_config


def _table(header, rows):
  widths = [max(len(str(x)) for x in column) for column in zip(header, *rows)]
  return [
    '  '.join(str(x).ljust(w) for x, w in zip(row, widths)).rstrip() for row in (header, *rows)
  ]


def selection_table(result):
  """The select stage's summary: MI per snapshot (mean ± std over the repeats), T* marked."""
  repeats = result.get('repeats', {}).get('count', 1)
  lines = [
    f'{"epoch":>6} {"teacher acc":>11} {"I(X;F)":>18} {"I(Y;F)":>16} {"score":>7} '
    f'{"T* in":>6}   ({result["estimator"]["method"]}, nats, {repeats} repeat(s))'
  ]
  for s in result['snapshots']:
    mark = '   <- T*' if s['epoch'] == result['chosen_epoch'] else ''
    lines.append(
      f'{s["epoch"]:>6} {100 * s["teacher_test_accuracy"]:>11.2f} '
      f'{report.mi_value(s, "I_XF", 4):>18} {report.mi_value(s, "I_YF", 4):>16} '
      f'{s["score"]:>7.3f} {s.get("chosen_in_repeats", ""):>6}{mark}'
    )
  return '\n'.join(lines)


def estimators_table(result):
  """With several estimators: each one's T* and the rank correlations of their curves."""
  return '\n'.join(
    _table(*report.estimator_rows(result)) + _table(*report.correlation_rows(result))
  )


def students_table(workdir):
  """The distill stage's summary: student accuracy per teacher choice, and whether KD helped."""
  summary = report.student_summary(report.collect(workdir, read_config(workdir)))
  lines = [f'{"teacher choice":<32} {"teacher acc":>11} {"student last":>15} {"student best":>15}']
  for choice, entry in summary.items():
    teacher = '' if entry['teacher'] == '' else f'{100 * entry["teacher"]:.2f}'
    lines.append(
      f'{choice:<32} {teacher:>11} {report.format_pct(entry["last"]):>15} '
      f'{report.format_pct(entry["best"]):>15}'
    )
  winners = report.kd_winners(summary)
  if winners is not None:
    lines.append(
      'KD beat the no-KD baseline (last-epoch accuracy, mean over seeds) with: '
      + (', '.join(winners) if winners else 'no teacher choice')
    )
  return '\n'.join(lines)
