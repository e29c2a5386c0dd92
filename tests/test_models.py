"""Model zoo: parameter counts equal to the authors' PyTorch models, feature sizes, blocks vs
numpy."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ckd_jax.models import get_model
from ckd_jax.models.resnet import BasicBlock
from ckd_jax.models.shufflenetv2 import channel_shuffle
from ckd_jax.training import count_params

# Counts of the original PyTorch models, 100 classes.
PARAM_COUNTS = {
  'wrn_40_2': 2_255_156,
  'wrn_40_1': 569_780,
  'wrn_16_2': 703_284,
  'resnet110': 1_733_812,
  'resnet32': 470_004,
  'resnet20': 275_572,
  'resnet56': 858_868,
  'resnet110_b': 1_736_564,
  'resnet32_b': 472_756,
  'resnet8_b': 83_892,
  'resnet20_b': 278_324,
  'resnet8x4': 1_233_540,
  'resnet32x4': 7_433_860,
  'mobilenetv2_075': 1_475_692,
  'mobilenetv2_050': 812_836,
  'shufflenetv2': 1_360_896,
}


@pytest.mark.parametrize('name,expected', sorted(PARAM_COUNTS.items()))
def test_parameter_count_matches_pytorch(name, expected):
  assert count_params(get_model(name, 100), (32, 32, 3)) == expected


@pytest.mark.parametrize(
  'name,expected', [('imagenet_resnet18', 11_689_512), ('imagenet_resnet34', 21_797_672)]
)
def test_imagenet_parameter_count_matches_torchvision(name, expected):
  """torchvision.models.resnet18() / resnet34(), 1000 classes (no compilation: eval_shape)."""
  assert count_params(get_model(name, 1000), (224, 224, 3)) == expected


def test_imagenet_resnet_shapes():
  """The 7×7 stem, 512 pooled features and the logits; only 18 and 34 layers are built."""
  model = get_model('imagenet_resnet18', 1000)
  x = jnp.zeros((2, 224, 224, 3))
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), x))
  stem = variables['params']['Conv_0']['kernel']
  assert stem.shape == (7, 7, 3, 64)
  logits, features = jax.eval_shape(lambda v: model.apply(v, x, return_features=True), variables)
  assert logits.shape == (2, 1000) and features.shape == (2, 512)
  with pytest.raises(ValueError, match='one of \\[18, 34\\]'):
    get_model('imagenet_resnet50', 1000)


@pytest.mark.parametrize(
  'name,dim',
  [
    ('wrn_40_2', 128),
    ('resnet110', 64),
    ('resnet32', 64),
    ('mobilenetv2_075', 1280),
    ('shufflenetv2', 1024),
  ],
)
def test_features_are_pooled_penultimate(name, dim):
  """Shapes only, traced once (`init_with_output` runs the forward that `init` traces anyway)."""
  model = get_model(name, 100)
  x = jnp.zeros((2, 32, 32, 3))
  (logits, features), _ = jax.eval_shape(
    lambda: model.init_with_output(jax.random.key(0), x, return_features=True)
  )
  assert logits.shape == (2, 100) and features.shape == (2, dim)


def test_logits_are_classifier_of_features():
  model = get_model('resnet8_b', 10)
  x = jax.random.normal(jax.random.key(1), (3, 8, 8, 1))
  variables = jax.jit(model.init)(jax.random.key(0), x)  # jitted: one compilation, not one per op
  logits, features = jax.jit(lambda v: model.apply(v, x, return_features=True))(variables)
  dense = variables['params']['classifier']
  np.testing.assert_allclose(
    logits, features @ dense['kernel'] + dense['bias'], rtol=1e-5, atol=1e-5
  )
  np.testing.assert_allclose(jax.jit(model.apply)(variables, x), logits, rtol=1e-6)


def test_option_a_shortcut_is_subsample_and_zero_pad():
  """With zero conv kernels the residual branch is 0, so the block is relu(shortcut(x))."""
  block = BasicBlock(features=8, stride=2, shortcut='A')
  x = np.random.default_rng(0).normal(size=(2, 6, 6, 4)).astype(np.float32)
  variables = block.init(jax.random.key(0), x, train=False)
  zeroed = jax.tree_util.tree_map_with_path(
    lambda path, v: jnp.zeros_like(v) if 'kernel' in jax.tree_util.keystr(path) else v, variables
  )
  out = block.apply(zeroed, x, train=False)
  expected = np.maximum(np.pad(x[:, ::2, ::2, :], ((0, 0), (0, 0), (0, 0), (2, 2))), 0)
  np.testing.assert_allclose(out, expected, atol=1e-6)
  assert 'Conv_2' not in variables['params']  # option A has no projection parameters


def test_channel_shuffle_matches_numpy():
  x = np.arange(2 * 3 * 3 * 6, dtype=np.float32).reshape(2, 3, 3, 6)
  expected = x.reshape(2, 3, 3, 2, 3).transpose(0, 1, 2, 4, 3).reshape(2, 3, 3, 6)
  np.testing.assert_array_equal(channel_shuffle(jnp.asarray(x)), expected)
  assert list(expected[0, 0, 0]) == [0, 3, 1, 4, 2, 5]


def test_stride2_conv_pads_symmetrically_like_torch():
  """torch pads a 3×3 stride-2 conv by 1 on every side; flax 'SAME' would pad (0, 1)."""
  from ckd_jax.models.layers import conv

  layer = conv(1, 3, 2)
  x = np.random.default_rng(0).normal(size=(1, 4, 4, 1)).astype(np.float32)
  kernel = np.random.default_rng(1).normal(size=(3, 3, 1, 1)).astype(np.float32)
  out = layer.apply({'params': {'kernel': kernel}}, x)
  padded = np.pad(x[0, :, :, 0], 1)
  expected = np.array(
    [[np.sum(padded[i : i + 3, j : j + 3] * kernel[:, :, 0, 0]) for j in (0, 2)] for i in (0, 2)]
  )
  np.testing.assert_allclose(out[0, :, :, 0], expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
  'name,message',
  [
    ('resnet33', 'depth must be 6n\\+2 >= 8, got 33'),
    ('resnet21', 'depth must be 6n\\+2 >= 8, got 21'),
    ('resnet2', 'depth must be 6n\\+2 >= 8, got 2'),
    ('vgg16', "Unknown model 'vgg16'"),
    ('wrn_41_2', 'depth must be 6n\\+4 >= 10'),
    ('wrn_16_0', 'width >= 1'),
    ('shufflenetv2_07', 'ratio must be one of'),
  ],
)
def test_bad_model_names_are_refused_when_the_model_is_built(name, message):
  with pytest.raises(ValueError, match=message):
    get_model(name, 10)


def test_bad_num_classes_is_refused():
  with pytest.raises(ValueError, match='num_classes'):
    get_model('resnet20', 1)


def test_batch_norm_keeps_torchs_unbiased_running_variance():
  """Normalisation as flax's BatchNorm (same names, same output), running var with n/(n−1) as
  torch.nn.BatchNorm2d; under pmap with synchronised statistics, n counts every device's
  examples."""
  import flax.linen as nn

  from ckd_jax.models.layers import BatchNorm

  x = np.random.default_rng(0).normal(1.0, 2.0, size=(8, 4, 4, 3)).astype(np.float32)
  ours = BatchNorm(use_running_average=False)
  flax_bn = nn.BatchNorm(use_running_average=False, momentum=0.9, epsilon=1e-5)
  variables = ours.init(jax.random.key(0), x)
  chex.assert_trees_all_equal_structs(variables, flax_bn.init(jax.random.key(0), x))
  y, stats = ours.apply(variables, x, mutable=['batch_stats'])
  y_flax, stats_flax = flax_bn.apply(variables, x, mutable=['batch_stats'])
  chex.assert_trees_all_close(y, y_flax, atol=1e-6)
  flat = x.reshape(-1, 3).astype(np.float64)
  chex.assert_trees_all_close(stats['batch_stats']['mean'], 0.1 * flat.mean(0), rtol=1e-5)
  chex.assert_trees_all_close(
    stats['batch_stats']['var'], 0.9 + 0.1 * flat.var(0, ddof=1), rtol=1e-5
  )
  synced = BatchNorm(use_running_average=False, axis_name='devices')
  _, pmapped = jax.pmap(
    lambda v, xs: synced.apply(v, xs, mutable=['batch_stats']),
    axis_name='devices',
    in_axes=(None, 0),
  )(variables, x.reshape(8, 1, 4, 4, 3))
  chex.assert_trees_all_close(jax.tree.map(lambda s: s[0], pmapped), stats, rtol=1e-5)
