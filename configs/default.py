"""Every field of a ckd_jax config, with its default: read this file to know what can be set.

The teacher and student sections hold the paper's recipe (Wang et al. 2022: WRN-40-2 → WRN-40-1,
200 epochs, batch 128, SGD 0.1 Nesterov, weight decay 5e-4, ×0.1 at 60/120/180, snapshots every
20 epochs, KD α = 0.5, τ = 5). The other files in configs/ start from `get_config()` (through
`ckd_jax.recipes`, which holds the other papers' numbers) and change what they change. A source may
add fields of its own (`data.label` for `source='cifar'`). Override any field on the command line:
`--config.teacher.epochs=50`.
"""

import ml_collections


def get_config(arg=None):
  del arg
  config = ml_collections.ConfigDict()
  config.seed = 0  # run k of a stage uses seed + k (teacher seeds, student seeds)
  config.stages = 'teacher,select,distill,report'  # any subset, run in this order
  config.parallel = 'auto'  # 'mesh' (sharded jit over all local devices) if >1, else 'none'; 'pmap'
  config.host_devices = 0  # CPU only: split it into this many devices (0: two per core, at most 8)
  config.sync_batch_norm = True  # under pmap, BN statistics over the global batch (mesh: always)
  config.steps_per_call = 1  # K > 1: K training steps per device call (one lax.scan; fast GPUs)
  config.dtype = 'float32'  # or 'bfloat16': bf16 compute, float32 parameters, statistics, losses
  config.progress = True  # progress bars (steps, img/s, ETA, each epoch's test accuracy)
  config.tensorboard = False  # True: also TensorBoard scalars (needs the `tensorboard` extra)

  config.data = data = ml_collections.ConfigDict()
  data.source = (
    'tfds'  # 'cifar', 'tiny_imagenet', 'tfds', 'image_folder', 'digits', 'fashion_mnist'
  )
  data.name = ''  # the dataset's name ('cifar100', 'cifar10', …); a TFDS name for 'tfds'
  data.data_dir = ''  # tfds: TFDS's data directory ('' : TFDS's default)
  data.download = False  # cifar, tfds: fetch the data when it is missing
  data.root = ''  # the folder the files are read from (cifar, tiny_imagenet, image_folder, …)
  data.cache_dir = ''  # image folders: where decoded images are kept as .npy ('' : not kept)
  data.image_size = 0  # image folders: resize to this size (0: keep the files' size)
  data.train_examples = 0  # cut the training split to a fixed random subset of N (0: all)
  data.test_examples = 0  # the same for the test split
  data.crop_padding = 4  # augmentation: zero-pad by this many pixels, then a random crop
  data.flip = True  # augmentation: random horizontal flips
  data.eval_batch_size = 500  # batch of the evaluation passes
  data.stream = False  # image_folder only: read the training images as they are needed
  data.stream_threads = 16  # data.stream: steps read ahead (grain's threads)

  config.vectorize_max_runs = 0  # runs per vectorised program (0: all, halved while out of memory)

  # vectorize=True: the seeds of the teacher stage, and the students whose teachers have as many
  # members, train as one vmapped program each (a GPU's way to run many small models at once).
  config.teacher = teacher = ml_collections.ConfigDict()
  teacher.vectorize = False
  teacher.arch = 'wrn_40_2'  # a name of the model zoo (docs/models.md)
  teacher.batch_size = 128
  teacher.checkpoint_every_steps = 500  # the rolling resume checkpoint (0: at every epoch end)
  teacher.epochs = 200
  teacher.label_smoothing = 0.0
  teacher.num_seeds = 1  # independently seeded teachers (the full ensemble needs several)
  teacher.optimizer = _paper_optimizer()
  teacher.snapshot_epochs = tuple(range(20, 201, 20))  # the snapshots kept (Orbax), T_1 … T_n

  config.distill = distill = ml_collections.ConfigDict()
  distill.vectorize = False
  distill.alpha = 0.5  # loss = α·CE + (1 − α)·τ²·KL(teacher ‖ student)
  distill.batch_size = 128
  distill.checkpoint_every_steps = 500
  distill.ensemble_mode = 'probs'  # 'probs': the paper's equation; 'logits': the authors' code
  distill.epochs = 200
  distill.kd_until_epoch = (
    0  # ESKD variant (b): CE only after this student epoch; 0 = KD throughout
  )
  distill.label_smoothing = 0.0
  distill.num_seeds = 1  # students per teacher choice
  distill.optimizer = _paper_optimizer()
  distill.student = 'wrn_40_1'
  distill.teacher_train_mode_batch_norm = (
    False  # True reproduces the authors' train-mode teacher BN
  )
  # The paper's choices (docs/distillation.md): T0.3, T0.5, T0.7, T_full, T*, a snapshot ensemble,
  # no teacher; `full_ensemble:M` needs teacher.num_seeds ≥ M.
  distill.teachers = (
    'epoch:60',
    'epoch:100',
    'epoch:140',
    'final',
    'selected',
    'snapshot_ensemble:100,140,200',
    'none',
  )
  distill.temperature = 5.0  # τ

  config.select = select = ml_collections.ConfigDict()
  # 'kde', 'variational', 'binning', 'infopro'; a list ('kde,infopro') or 'all': the first decides
  # T*. kde on the logits with 'max': the smallest worst regret of the MI settings over
  # EXPERIMENTS.md's four studies (inside the noise of the best snapshot in all four).
  select.method = 'kde'
  select.feature = 'logits'  # or 'penultimate', 'spatial' (infopro always reads 'spatial')
  # 'train': fit on the first fit_samples training images (at most half), evaluate on the next
  # num_samples (0: all the rest): no test image is read. 'test': evaluate on the test split.
  select.split = 'train'
  select.num_samples = 10000  # images the estimate is evaluated on (0: all of the split's rest)
  select.fit_samples = 10000  # training images the probes/decoders are fitted on
  select.batch_size = 500  # feature extraction chunk
  # of each curve across snapshots: 'max' (divide by the largest), 'minmax' (to [0, 1]), 'none'
  select.normalization = 'max'
  select.weights = (1.0, 1.0)  # T* maximises weights[0]·I(X;F) + weights[1]·I(Y;F)
  select.repeats = 5  # estimates on half-samples with probe/decoder seeds seed+r: mean ± std
  select.subsample = 0.5  # the fraction of the evaluation samples each repeat draws
  select.variational = dict(
    seed=0,
    probe=dict(steps=1000, batch_size=256, learning_rate=1e-2),
    decoder=dict(hidden=256, steps=1000, batch_size=256, learning_rate=1e-3, pixel_noise_std=0.1),
  )  # σ of the Gaussian pixel likelihood
  # the decoder reads the last spatial map (a per-location MLP, binary cross-entropy)
  select.infopro = dict(
    seed=0,
    probe=dict(steps=1000, batch_size=256, learning_rate=1e-2),
    decoder=dict(hidden=64, steps=1000, batch_size=128, learning_rate=1e-3),
  )
  select.kde = dict(noise_variance='auto', chunk_size=1024)  # or a fixed σ², e.g. '0.5'
  select.binning = dict(num_bins=30)
  return config


def _paper_optimizer():
  return ml_collections.ConfigDict(
    dict(
      learning_rate=0.1,
      momentum=0.9,
      nesterov=True,
      weight_decay=5e-4,
      schedule='step',
      milestones=(60, 120, 180),
      gamma=0.1,
    )
  )
