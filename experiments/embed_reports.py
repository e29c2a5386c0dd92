"""Copies the studies' reports into EXPERIMENTS.md, so that its tables are the reports', never retyped.

  python experiments/embed_reports.py fashion_mnist=runs/fashion_mnist cifar10_jpeg=runs/cifar10_jpeg

For each `study=workdir`: rebuilds the workdir's report (files only, seconds), copies its figures
and results.csv to experiments/<study>/ (refusing a PNG over 200 KB), and replaces the block between
`<!-- report:<study> -->` and `<!-- end report:<study> -->` in EXPERIMENTS.md by the report, its
headings one level down and its images pointing at the copies.
"""
import pathlib
import re
import shutil
import sys

from ckd_jax.stages import report
from ckd_jax.workdir import layout

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCUMENT = ROOT / 'EXPERIMENTS.md'
MAX_FIGURE_BYTES = 200 * 1024


def markers(study):
  return f'<!-- report:{study} -->', f'<!-- end report:{study} -->'


def embed(document, study, report_text, figure_dir):
  """`document` with the block of `study` replaced by `report_text` (title dropped, headings
  demoted, image paths → figure_dir/<file name>)."""
  begin, end = markers(study)
  if document.count(begin) != 1 or document.count(end) != 1:
    raise ValueError(f'EXPERIMENTS.md needs exactly one {begin} … {end} block')
  body = report_text.split('\n', 1)[1].strip()  # drop the report's own '# …' title
  body = re.sub(r'^(#+) ', r'#\1 ', body, flags=re.MULTILINE)
  body = re.sub(r'\]\(([^)]*/)?([^/)]+\.png)\)', lambda m: f']({figure_dir}/{m[2]})', body)
  head, rest = document.split(begin)
  _, tail = rest.split(end)
  return f'{head}{begin}\n{body}\n{end}{tail}'


def copy_figures(workdir, target):
  """The report's PNGs and results.csv → target; raises on a figure too big to commit."""
  target.mkdir(parents=True, exist_ok=True)
  sources = [workdir / layout.TEACHER_PLOT, workdir / layout.STUDENTS_PLOT,
             layout.selection_dir(workdir) / layout.MI_PLOT, workdir / layout.RESULTS_CSV]
  for source in filter(pathlib.Path.exists, sources):
    if source.suffix == '.png' and source.stat().st_size > MAX_FIGURE_BYTES:
      raise ValueError(f'{source} is {source.stat().st_size // 1024} KB; figures must stay '
                       f'under {MAX_FIGURE_BYTES // 1024} KB')
    shutil.copyfile(source, target / source.name)


def main(argv):
  if not argv or any('=' not in a for a in argv):
    raise SystemExit(__doc__)
  document = DOCUMENT.read_text()
  for study, workdir in (a.split('=', 1) for a in argv):
    workdir = pathlib.Path(workdir)
    report_text = report.build_report(workdir).read_text()
    copy_figures(workdir, ROOT / 'experiments' / study)
    document = embed(document, study, report_text, f'experiments/{study}')
  DOCUMENT.write_text(document)
  print(f'updated {DOCUMENT}')


if __name__ == '__main__':
  main(sys.argv[1:])
