"""One 3×3 convolution's forward and backward passes: JAX's own gradient against
`ckd_jax.models.conv`, alone and inside a compiled loop, and PyTorch's in the same command.

  python benchmarks/conv_grads.py                    # ResNet-20's three widths at batch 128, 32×32
  python benchmarks/conv_grads.py --torch            # with PyTorch's forward + backward
  python benchmarks/conv_grads.py --depthwise        # one filter per channel (MobileNetV2's)
  python benchmarks/conv_grads.py --shapes 64x2x64   # 3×3 over 2×2 maps (8×8 digits' last stage)

Why: on the CPU the training step's convolutions are where ckd_jax trails PyTorch, and XLA's CPU
backend ran JAX's kernel gradient 30–40× slower inside loops (`lax.map` over stacked runs,
`lax.scan` over K steps). Per row, ms per call: the forward alone, the gradient with respect to the
images, to the kernel, and both with the forward (`fwd+bwd`); `loop` rows are per iteration of a
`lax.map` over --loop stacked copies. Prints a table and writes JSON (default
benchmarks/results/conv_grads.json).
"""

import argparse
import json
import os
import pathlib
import platform
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
LAYOUT = ('NHWC', 'HWIO', 'NHWC')


def timed_ms(fn, args, repeats):
  """The best of `repeats` calls after one warm-up, in ms (the minimum: least disturbed)."""
  import jax

  jax.block_until_ready(fn(*args))
  best = float('inf')
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    best = min(best, time.perf_counter() - start)
  return 1000 * best


def jax_rows(shape, args):
  """Rows of JAX's rule ('lax') and ckd_jax's ('ckd_jax'), alone and in a loop, for one layer."""
  import jax
  import jax.numpy as jnp
  import numpy as np
  from jax import lax

  from ckd_jax.models.conv import conv_general_dilated

  batch, size, channels = shape
  rng = np.random.default_rng(0)
  images = jnp.asarray(rng.normal(size=(batch, size, size, channels)), jnp.float32)
  groups = channels if args.depthwise else 1
  kernel = jnp.asarray(rng.normal(size=(3, 3, channels // groups, channels)) / 10, jnp.float32)
  grad_out = jnp.asarray(rng.normal(size=images.shape), jnp.float32)
  rows = []
  for name, conv in (('lax', lax.conv_general_dilated), ('ckd_jax', conv_general_dilated)):
    forward = lambda x, w, conv=conv: conv(
      x, w, (1, 1), ((1, 1), (1, 1)), dimension_numbers=LAYOUT, feature_group_count=groups
    )
    vjp = lambda x, w, g, forward=forward: jax.vjp(forward, x, w)[1](g)
    parts = {
      'fwd': lambda x, w, g: forward(x, w),
      'd_images': lambda x, w, g: vjp(x, w, g)[0],
      'd_kernel': lambda x, w, g: vjp(x, w, g)[1],
      'fwd+bwd': lambda x, w, g: (forward(x, w), vjp(x, w, g)),
    }
    for where in ('alone', 'loop'):
      row = {
        'framework': 'jax',
        'gradient': name,
        'where': where,
        'batch': batch,
        'size': size,
        'channels': channels,
        'depthwise': args.depthwise,
      }
      for part, fn in parts.items():
        if where == 'alone':
          row[part] = timed_ms(jax.jit(fn), (images, kernel, grad_out), args.repeats)
        else:
          stacked = [jnp.stack([a] * args.loop) for a in (images, kernel, grad_out)]
          looped = jax.jit(lambda *s, fn=fn: lax.map(lambda a: fn(*a), s))
          row[part] = timed_ms(looped, stacked, args.repeats) / args.loop
      rows.append(row)
  return rows


def torch_rows(shape, args):
  """PyTorch's forward and forward + backward of the same layer, NCHW and channels_last."""
  import torch

  if args.torch_threads:
    torch.set_num_threads(args.torch_threads)
  batch, size, channels = shape
  rows = []
  for layout in ('NCHW', 'channels_last'):
    conv = torch.nn.Conv2d(
      channels, channels, 3, padding=1, bias=False, groups=channels if args.depthwise else 1
    )
    images = torch.randn(batch, channels, size, size)
    if layout == 'channels_last':
      conv, images = (
        conv.to(memory_format=torch.channels_last),
        images.contiguous(memory_format=torch.channels_last),
      )
    images.requires_grad_(True)

    def forward_backward():
      out = conv(images)
      out.backward(torch.ones_like(out))

    row = {
      'framework': 'torch',
      'gradient': layout,
      'where': 'alone',
      'batch': batch,
      'size': size,
      'channels': channels,
      'depthwise': args.depthwise,
      'd_images': None,
      'd_kernel': None,
    }
    for part, fn in (('fwd', lambda: conv(images)), ('fwd+bwd', forward_backward)):
      fn()
      best = float('inf')
      for _ in range(args.repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
      row[part] = 1000 * best
    rows.append(row)
  return rows


def print_table(rows):
  header = (
    'framework',
    'gradient',
    'where',
    'batch×size²×channels',
    'fwd ms',
    'd_images ms',
    'd_kernel ms',
    'fwd+bwd ms',
  )
  print('| ' + ' | '.join(header) + ' |')
  print('|' + '---|' * len(header))
  for r in rows:
    shape = f'{r["batch"]}×{r["size"]}²×{r["channels"]}'
    cells = [r['framework'], r['gradient'], r['where'], shape]
    cells += [
      '–' if r[k] is None else f'{r[k]:.1f}' for k in ('fwd', 'd_images', 'd_kernel', 'fwd+bwd')
    ]
    print('| ' + ' | '.join(cells) + ' |')


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument(
    '--shapes',
    default='128x32x16,128x16x32,128x8x64',
    help='batch x image size x channels, comma-separated',
  )
  parser.add_argument('--depthwise', action='store_true', help='one 3×3 filter per channel')
  parser.add_argument('--loop', type=int, default=3, help='stacked copies in the loop rows')
  parser.add_argument('--repeats', type=int, default=5)
  parser.add_argument('--torch', action='store_true', help='also PyTorch (needs torch)')
  parser.add_argument('--torch_threads', type=int, default=0, help='0: torch default')
  parser.add_argument('--out', default=str(HERE / 'results' / 'conv_grads.json'))
  return parser.parse_args(argv)


def main(argv=None):
  args = parse_args(argv)
  rows = []
  for text in args.shapes.split(','):
    shape = tuple(int(v) for v in text.split('x'))
    if len(shape) != 3:
      raise SystemExit(f'a shape is batch x size x channels, got {text!r}')
    rows += jax_rows(shape, args) + (torch_rows(shape, args) if args.torch else [])
  print_table(rows)
  out = pathlib.Path(args.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(
    json.dumps(
      {
        'command': ' '.join(sys.argv),
        'machine': platform.platform(),
        'cpu_count': os.cpu_count(),
        'date': time.strftime('%Y-%m-%d'),
        'rows': rows,
      },
      indent=1,
    )
  )
  print(f'wrote {out}')
  return rows


if __name__ == '__main__':
  main()
