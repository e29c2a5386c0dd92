"""Copies the studies' reports into EXPERIMENTS.md, so that its tables are the reports', never
retyped.

  python experiments/embed_reports.py fashion_mnist=runs/fashion_mnist \
      cifar10_jpeg=runs/cifar10_jpeg

For each `study=workdir`: rebuilds the workdir's report (files only, seconds), copies its figures,
results.csv, config.json and selection/mi.json to experiments/<study>/ (refusing a PNG over
200 KB; experiments/regret.py reruns on those copies), and replaces the block between
`<!-- report:<study> -->` and `<!-- end report:<study> -->` in EXPERIMENTS.md by the report, its
headings one level down and its images pointing at the copies.
"""

import pathlib
import re
import shutil
import sys

from ckd_jax.stages import report
from ckd_jax.workdir import layout
from ckd_jax.workdir.files import write_text

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


def study_files(workdir):
  """[(source, path under experiments/<study>/)] of the files that exist: the report's PNGs,
  results.csv, and config.json with selection/mi.json (so that experiments/regret.py can rerun on
  the copies); raises on a figure too big to commit."""
  sources = [
    workdir / layout.TEACHER_PLOT,
    workdir / layout.STUDENTS_PLOT,
    layout.selection_dir(workdir) / layout.MI_PLOT,
    workdir / layout.RESULTS_CSV,
  ]
  files = [(source, source.name) for source in sources if source.exists()]
  for source, _ in files:
    if source.suffix == '.png' and source.stat().st_size > MAX_FIGURE_BYTES:
      raise ValueError(
        f'{source} is {source.stat().st_size // 1024} KB; figures must stay '
        f'under {MAX_FIGURE_BYTES // 1024} KB'
      )
  records = [
    (workdir / layout.CONFIG, layout.CONFIG),
    (layout.selection_path(workdir), f'{layout.SELECTION_DIR}/{layout.MI_JSON}'),
  ]
  return files + [(source, name) for source, name in records if source.exists()]


def main(argv):
  """Checks every study before it writes anything: a bad argument leaves all files as they were."""
  if not argv or any('=' not in a for a in argv):
    raise SystemExit(__doc__)
  document, studies = DOCUMENT.read_text(), []
  for study, workdir in (a.split('=', 1) for a in argv):
    workdir = pathlib.Path(workdir)
    if not (workdir / layout.CONFIG).exists():
      raise SystemExit(f'error: {workdir} is not a workdir (no {layout.CONFIG})')
    try:
      document = embed(
        document, study, report.build_report(workdir).read_text(), f'experiments/{study}'
      )
      studies.append((study, study_files(workdir)))
    except ValueError as e:
      raise SystemExit(f'error: {e}') from None
  for study, sources in studies:
    for source, name in sources:
      target = ROOT / 'experiments' / study / name
      target.parent.mkdir(parents=True, exist_ok=True)
      shutil.copyfile(source, target)
  write_text(DOCUMENT, document)  # atomic: a kill leaves the old or the new file
  print(f'updated {DOCUMENT}')


if __name__ == '__main__':
  main(sys.argv[1:])
