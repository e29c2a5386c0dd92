"""SGD with coupled L2 weight decay and epoch-wise schedules, as torch.optim.SGD + MultiStepLR
do."""

import optax

SCHEDULES = ('step', 'cosine')


def validate_optimizer_config(opt, epochs):
  if opt.schedule not in SCHEDULES:
    raise ValueError(f'Unknown lr schedule {opt.schedule!r}; choose one of {SCHEDULES}')
  milestones = tuple(opt.milestones)
  if opt.schedule == 'step' and (
    list(milestones) != sorted(set(milestones)) or any(not 0 < m < epochs for m in milestones)
  ):
    raise ValueError(f'lr milestones {milestones} must be increasing epochs in (0, {epochs})')
  if opt.learning_rate <= 0 or opt.weight_decay < 0 or not 0 <= opt.momentum < 1:
    raise ValueError('need learning_rate > 0, weight_decay >= 0 and 0 <= momentum < 1')


def make_schedule(opt, steps_per_epoch, epochs):
  """lr as a function of the optimizer step; 'step' changes only at epoch boundaries."""
  if opt.schedule == 'cosine':
    return optax.cosine_decay_schedule(opt.learning_rate, epochs * steps_per_epoch)
  return optax.piecewise_constant_schedule(
    opt.learning_rate, {m * steps_per_epoch: opt.gamma for m in opt.milestones}
  )


def make_optimizer(opt, steps_per_epoch, epochs):
  """g ← g + wd·p (on every parameter, BN included, as torch does), then (Nesterov) momentum SGD."""
  validate_optimizer_config(opt, epochs)
  return optax.chain(
    optax.add_decayed_weights(opt.weight_decay),
    optax.sgd(
      make_schedule(opt, steps_per_epoch, epochs),
      momentum=opt.momentum or None,
      nesterov=opt.nesterov,
    ),
  )
