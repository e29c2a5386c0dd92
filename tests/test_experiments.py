"""experiments/embed_reports.py: EXPERIMENTS.md takes the reports' text as they are."""

import importlib.util
import pathlib

import pytest

_PATH = pathlib.Path(__file__).resolve().parent.parent / 'experiments' / 'embed_reports.py'
_SPEC = importlib.util.spec_from_file_location('embed_reports', _PATH)
embed_reports = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(embed_reports)

REPORT = """# Checkpoint KD report: a → b on x

![teacher accuracy](teacher_accuracy.png)

## MI

| epoch | I(X;F) |
|---:|---:|
| 3 | 1.0 |

T* = epoch 3. ![MI over snapshots](selection/mi.png)
"""


def test_the_block_of_a_study_is_replaced_by_its_report():
  document = (
    '# Experiments\n\nprose\n<!-- report:fm -->\nold\n<!-- end report:fm -->\nafter\n'
    '<!-- report:c10 -->\nother\n<!-- end report:c10 -->\n'
  )
  out = embed_reports.embed(document, 'fm', REPORT, 'experiments/fm')
  assert out == (
    '# Experiments\n\nprose\n<!-- report:fm -->\n'
    '![teacher accuracy](experiments/fm/teacher_accuracy.png)\n\n### MI\n\n'
    '| epoch | I(X;F) |\n|---:|---:|\n| 3 | 1.0 |\n\n'
    'T* = epoch 3. ![MI over snapshots](experiments/fm/mi.png)\n'
    '<!-- end report:fm -->\nafter\n<!-- report:c10 -->\nother\n'
    '<!-- end report:c10 -->\n'
  )
  assert embed_reports.embed(out, 'fm', REPORT, 'experiments/fm') == out  # idempotent


def test_a_missing_block_or_a_figure_too_big_is_refused(tmp_path):
  with pytest.raises(ValueError, match='report:fm'):
    embed_reports.embed('no markers', 'fm', REPORT, 'x')
  (tmp_path / 'results.csv').write_text('kind\n')
  (tmp_path / 'selection').mkdir()
  (tmp_path / 'selection' / 'mi.json').write_text('{}')
  assert embed_reports.study_files(tmp_path) == [  # what exists, and where its copy goes
    (tmp_path / 'results.csv', 'results.csv'),
    (tmp_path / 'selection' / 'mi.json', 'selection/mi.json'),
  ]
  (tmp_path / 'teacher_accuracy.png').write_bytes(b'0' * (embed_reports.MAX_FIGURE_BYTES + 1))
  with pytest.raises(ValueError, match='under 200 KB'):
    embed_reports.study_files(tmp_path)
