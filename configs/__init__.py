"""The config files (`--config=configs/<name>.py`); installed as `ckd_jax.configs` (setup.py)."""
