"""ckd_jax: efficient knowledge distillation from model checkpoints, in JAX/Flax."""

import pathlib
import re

from setuptools import find_packages, setup

# The version lives in ckd_jax/__init__.py only.
VERSION = re.search(
  r"__version__ = '([^']+)'",
  pathlib.Path(__file__).with_name('ckd_jax').joinpath('__init__.py').read_text(),
).group(1)

setup(
  name='ckd_jax',
  version=VERSION,
  description='Knowledge distillation from model checkpoints (Wang et al., NeurIPS 2022) in JAX',
  long_description=open('README.md', encoding='utf-8').read(),
  long_description_content_type='text/markdown',
  # configs/ (default.py holds every field's default) is installed inside the package.
  packages=find_packages(include=['ckd_jax', 'ckd_jax.*']) + ['ckd_jax.configs'],
  package_dir={'ckd_jax.configs': 'configs'},
  license='Apache-2.0',
  python_requires='>=3.10',
  install_requires=[
    'jax>=0.6',
    'flax>=0.10',
    'optax>=0.2.4',
    'orbax-checkpoint>=0.11',
    'chex>=0.1.89',
    'absl-py>=2.0',
    'ml_collections>=1.0',
    'tensorflow-datasets>=4.9.7',  # imported lazily, only by the tfds source
    'numpy>=1.26',
    'scipy>=1.11',  # Spearman's rank correlation between MI estimators (jax needs scipy too)
    'scikit-learn>=1.3',  # the bundled digits dataset of the offline quick-start
    'pillow>=10.0',  # the image_folder source
    'grain>=0.2.10',  # data.stream: training images read ahead in threads (imported lazily)
    'tqdm>=4.66',
    'matplotlib>=3.7',  # the selection plot (Agg backend, no display needed)
  ],
  extras_require={
    'cuda': ['jax[cuda13]>=0.6'],
    # TFDS's downloads, and reading datasets prepared as TFRecord (the default of `tfds build`),
    # need TensorFlow; its download path also imports importlib_resources (through etils).
    'tfds': ['tensorflow-cpu>=2.16', 'importlib_resources>=6.0'],
    'tensorboard': ['tensorboardX>=2.6'],
    'launch': ['submitit>=1.5'],  # launch/slurm.py, launch/sweep.py --slurm
    'test': ['pytest>=8', 'pytest-xdist>=3.5', 'tensorboardX>=2.6', 'submitit>=1.5', 'ruff>=0.6'],
  },
)
