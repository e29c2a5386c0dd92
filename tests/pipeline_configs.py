"""A tiny offline pipeline config (digits, ResNet-8 teacher and student) for the end-to-end
tests."""

from ckd_jax.recipes import base_config, optimizer


def tiny_config(
  *,
  train=128,
  test=64,
  eval_batch=64,
  teacher_seeds=1,
  student_seeds=1,
  epochs=2,
  milestones=(1,),
  checkpoint_every=0,
  student_epochs=None,
  choices=('final',),
  select=None,
  stages='teacher,select,distill,report',
  **distill,
):
  """Teacher snapshots at every epoch; students use the teacher's recipe unless `student_epochs`
  is given (then a constant learning rate)."""
  data = dict(
    source='digits',
    name='digits',
    crop_padding=1,
    flip=False,
    train_examples=train,
    test_examples=test,
    eval_batch_size=eval_batch,
  )
  recipe = dict(
    epochs=epochs,
    batch_size=32,
    label_smoothing=0.0,
    checkpoint_every_steps=checkpoint_every,
    optimizer=optimizer(0.05, milestones),
  )
  teacher = dict(
    recipe, arch='resnet8_b', num_seeds=teacher_seeds, snapshot_epochs=tuple(range(1, epochs + 1))
  )
  student = dict(
    recipe,
    student='resnet8_b',
    num_seeds=student_seeds,
    teachers=tuple(choices),
    alpha=0.5,
    temperature=4.0,
    ensemble_mode='probs',
    kd_until_epoch=0,
    teacher_train_mode_batch_norm=False,
  )
  if student_epochs:
    student.update(epochs=student_epochs, optimizer=optimizer(0.05, ()))
  student.update(distill)
  config = base_config(data, teacher, student, select, stages=stages)
  config.progress = False
  config.parallel = 'none'  # tiny 8×8 steps are fastest on one device; mesh and pmap: own tests
  return config


def smooth_two_stage_config():
  """Teacher and KD under parallel='mesh', without crop padding and at learning rate 0.02: a
  trajectory smooth enough that device splits can be compared (split_smooth_teacher_config says
  why; for this two-stage run 0.02 stays smooth)."""
  config = tiny_config(train=64, stages='teacher,distill')
  config.data.crop_padding, config.parallel = 0, 'mesh'
  config.teacher.optimizer.learning_rate = config.distill.optimizer.learning_rate = 0.02
  return config


def teacher_stage_config(**teacher):
  """The teacher stage alone: 3 epochs of 6 steps, a rolling checkpoint every 4 steps."""
  config = tiny_config(
    train=192,
    test=96,
    eval_batch=48,
    epochs=3,
    milestones=(2,),
    checkpoint_every=4,
    stages='teacher',
  )
  config.teacher.update(teacher)
  return config


# Which rates keep the teacher stage's trajectory smooth depends on the rounding of the compiled
# programs: with the tests' XLA flags (child_env.py) 0.01 met a kink under 'mesh' and 0.02 under
# 'pmap', 0.03 none. A new XLA flag or jaxlib may need another rate:
# `python benchmarks/split_drift.py` measures each split's distance from one device (the table:
# benchmarks/RESULTS.md, 2026-12-04).
SPLIT_SMOOTH_LEARNING_RATE = 0.03


def split_smooth_teacher_config(mode, learning_rate=SPLIT_SMOOTH_LEARNING_RATE):
  """teacher_stage_config without crop padding, at a rate where splits stay within rounding.
  Padding puts exact zeros in the images, which put some ReLU and BatchNorm inputs exactly where
  they are not smooth; there a rounding difference of 1e-7 (as any device split causes) switches a
  gradient entry, and the runs drift apart by up to 5e-2 in 18 steps."""
  config = teacher_stage_config()
  config.data.crop_padding, config.parallel = 0, mode
  config.teacher.optimizer.learning_rate = learning_rate
  return config
