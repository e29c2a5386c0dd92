"""The stages of a run, in order: teacher → select → distill → report.

Each module has `run(config, workdir)` beside its implementation and reads only what earlier stages
wrote to the workdir. Submodules are imported on demand, so `stages.report` works without JAX.
"""
