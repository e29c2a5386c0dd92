"""ckd_jax: knowledge distillation from model checkpoints (Wang et al., NeurIPS 2022) in
JAX/Flax."""

__version__ = '0.1.0'
