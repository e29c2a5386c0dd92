"""The README and docs/ stay true: the fields, files, links and numbers they name exist."""

import importlib.util
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PAGES = [ROOT / 'README.md', *sorted((ROOT / 'docs').glob('*.md'))]
# A config field as the docs write it: --config.a.b=… or `a.b` with a known top-level section.
FIELD_FLAG = re.compile(r'--config\.([a-z_][a-z0-9_.]*)=')
FIELD_NAMED = re.compile(r'`((?:data|teacher|distill|select)\.[a-z_][a-z0-9_.]*)')
LINK = re.compile(r'\]\(([^)#\s]+)(?:#[^)]*)?\)')
CONFIG_FILE = re.compile(r'configs/[a-z0-9_]+\.py')


def _config_fields():
  """Every field path of every config in configs/, from their get_config() (no JAX work)."""
  fields = set()

  def walk(config, prefix):
    for key, value in config.items():
      fields.add(prefix + key)
      if hasattr(value, 'items'):
        walk(value, prefix + key + '.')

  for path in sorted((ROOT / 'configs').glob('[!_]*.py')):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    walk(module.get_config(), '')
  return fields


@pytest.fixture(scope='module')
def config_fields():
  return _config_fields()


def test_every_config_field_named_in_the_docs_exists(config_fields):
  unknown, checked = {}, 0
  for page in PAGES:
    text = page.read_text()
    named = {name.rstrip('.') for name in FIELD_FLAG.findall(text) + FIELD_NAMED.findall(text)}
    checked += len(named)
    unknown[page.name] = sorted(name for name in named if name not in config_fields)
  assert checked > 25  # the patterns find what the docs name (31 when written)
  assert {page: names for page, names in unknown.items() if names} == {}


@pytest.mark.parametrize('page', PAGES, ids=lambda p: p.name)
def test_every_link_and_config_file_in_the_docs_exists(page):
  text = page.read_text()
  targets = [t for t in LINK.findall(text) if not t.startswith(('http://', 'https://'))]
  missing = [t for t in targets if not (page.parent / t).exists()]
  missing += [f for f in CONFIG_FILE.findall(text) if not (ROOT / f).exists()]
  assert not missing, f'{page.name} points to files that do not exist: {missing}'


def test_the_readme_is_short_and_its_results_come_from_experiments():
  readme = (ROOT / 'README.md').read_text()
  assert len(readme.splitlines()) <= 150
  table = readme[readme.index('## Results so far') : readme.index('## Documentation')]
  numbers = re.findall(r'\d+\.\d\d ± \d+\.\d\d', table)
  rows = [line for line in table.splitlines() if line.startswith('| ')]
  assert sum(len(re.findall(r'\d+\.\d\d ± ', row)) for row in rows) == 20  # 5 choices × 4 studies
  experiments = (ROOT / 'EXPERIMENTS.md').read_text()
  assert [n for n in numbers if n not in experiments] == []


# A machine's timing as prose writes it: "0.8 s", "~4 minutes", "5.6× slower", "1,261 img/s".
TIMING = re.compile(
  r'\d(?:\.\d+)?\s?(?:ms|s|seconds|minutes|min)\b|'
  r'\d(?:\.\d+)?× (?:faster|slower|the time|as long)|\d[\d,.]* ?img/s'
)


def test_no_machine_timings_in_the_docs_or_the_code():
  """Measured speeds live in benchmarks/RESULTS.md, dated, with the machine; docs and comments
  give the mechanism and link it (one machine's numbers go stale and get copied)."""
  files = PAGES + sorted(ROOT.glob('ckd_jax/**/*.py')) + sorted(ROOT.glob('configs/*.py'))
  found = {str(f.relative_to(ROOT)): TIMING.findall(f.read_text()) for f in files}
  assert {name: hits for name, hits in found.items() if hits} == {}
  assert TIMING.findall('took 5.2 of the 5.5 s, 1.8× slower, ~0.4 ms, 1261 img/s') == [
    '5.5 s',
    '1.8× slower',
    '0.4 ms',
    '1261 img/s',
  ]


def test_configs_default_holds_the_papers_recipe_that_the_recipes_start_from():
  """configs/default.py's teacher and student sections are what recipes build for the paper's
  pair, and its teacher choices are the paper's (so the file a newcomer reads is the truth)."""
  from ckd_jax import recipes

  default = recipes.default_config()
  student = recipes.student_recipe('paper', 'wrn_40_1', default.distill.teachers)
  assert {'vectorize': False, **student.to_dict()} == default.distill.to_dict()
  assert recipes.paper_teacher_choices(default.teacher, 1) == tuple(default.distill.teachers)
  assert {'vectorize': False, **recipes.paper_teacher('wrn_40_2').to_dict()} == (
    default.teacher.to_dict()
  )
  text = (ROOT / 'configs' / 'default.py').read_text()
  fields = re.findall(r'^  (?:config|data|teacher|distill|select)\.(\w+) = ', text, re.MULTILINE)
  assert len(fields) > 40  # every field, one line each (the pattern finds them)
