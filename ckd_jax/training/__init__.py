"""Training: state, optimizer, pure step builders and the epoch loop."""

from ckd_jax.training.loop import LoopOptions, LoopRun, Step, make_evaluator, train
from ckd_jax.training.optim import make_optimizer, make_schedule
from ckd_jax.training.state import TrainState, count_params, create_train_state, init_variables
from ckd_jax.training.steps import (
  built_once,
  ensemble_predict,
  make_distillation_loss_and_grads,
  make_eval_step,
  make_kd_loss_and_grads,
  make_loss_and_grads,
  make_multi_step,
  make_teacher_forward,
  make_teacher_targets,
  make_train_step,
  model_predict,
  over_runs,
)
