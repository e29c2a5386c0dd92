"""The PyTorch reference for benchmarks/run.py: the same architectures and steps, the authors' way.

  python benchmarks/torch_reference.py --models resnet20 --modes teacher   # usually run by run.py

A benchmark-only script (the library never imports torch). The models follow the authors' PyTorch
definitions (CIFAR ResNet with option-A or option-B shortcuts, pre-activation WRN), written here
from their papers' descriptions; their parameter counts equal ckd_jax's (tests/test_benchmarks.py).
The step is the authors': a Python loop, fp32, SGD with Nesterov momentum and weight decay, CE or KD
loss (teachers in eval mode under no_grad). Each row is timed in NCHW and in channels_last memory
format, on the batch already in memory (as ckd_jax's rows). Prints one JSON line per row.
"""

import argparse
import json
import re
import time

import torch
import torch.nn.functional as F
from torch import nn


class BasicBlock(nn.Module):
  def __init__(self, cin, cout, stride, shortcut):
    super().__init__()
    self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(cout)
    self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(cout)
    self.stride, self.pad = stride, cout - cin
    self.projection = None
    if (stride != 1 or cin != cout) and shortcut == 'B':
      self.projection = nn.Sequential(
        nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
      )

  def forward(self, x):
    y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
    if self.projection is not None:
      x = self.projection(x)
    elif self.stride != 1 or self.pad:  # option A: subsample, zero-pad the new channels
      x = F.pad(
        x[:, :, :: self.stride, :: self.stride],
        (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2),
      )
    return F.relu(x + y)


class CifarResNet(nn.Module):
  def __init__(self, depth, num_classes, shortcut='A'):
    super().__init__()
    n = (depth - 2) // 6
    self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(16)
    layers, cin = [], 16
    for cout, stride in ((16, 1), (32, 2), (64, 2)):
      for i in range(n):
        layers.append(BasicBlock(cin, cout, stride if i == 0 else 1, shortcut))
        cin = cout
    self.layers = nn.Sequential(*layers)
    self.fc = nn.Linear(64, num_classes)

  def forward(self, x):
    x = self.layers(F.relu(self.bn1(self.conv1(x))))
    return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class WideBlock(nn.Module):
  def __init__(self, cin, cout, stride):
    super().__init__()
    self.bn1 = nn.BatchNorm2d(cin)
    self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(cout)
    self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
    self.shortcut = None if cin == cout else nn.Conv2d(cin, cout, 1, stride, bias=False)

  def forward(self, x):
    pre = F.relu(self.bn1(x))
    y = self.conv2(F.relu(self.bn2(self.conv1(pre))))
    return (x if self.shortcut is None else self.shortcut(pre)) + y


class WideResNet(nn.Module):
  def __init__(self, depth, widen, num_classes):
    super().__init__()
    n = (depth - 4) // 6
    self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
    layers, cin = [], 16
    for width, stride in ((16, 1), (32, 2), (64, 2)):
      for i in range(n):
        layers.append(WideBlock(cin, width * widen, stride if i == 0 else 1))
        cin = width * widen
    self.layers = nn.Sequential(*layers)
    self.bn = nn.BatchNorm2d(cin)
    self.fc = nn.Linear(cin, num_classes)

  def forward(self, x):
    x = F.relu(self.bn(self.layers(self.conv1(x))))
    return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def get_model(name, num_classes):
  """ckd_jax's names: resnet<d> (option A), resnet<d>_b (option B), wrn_<d>_<k>."""
  if match := re.fullmatch(r'resnet(\d+)(_b)?', name):
    return CifarResNet(int(match[1]), num_classes, 'B' if match[2] else 'A')
  if match := re.fullmatch(r'wrn_(\d+)_(\d+)', name):
    return WideResNet(int(match[1]), int(match[2]), num_classes)
  raise SystemExit(f'torch_reference has no model {name!r} (resnet<d>, resnet<d>_b, wrn_<d>_<k>)')


def kd_loss(logits, teacher_logits, labels, alpha=0.9, temperature=4.0):
  """(1 − α)·CE + α·T²·KL(p_T ‖ p_S) against the mean of the teachers' softened probabilities."""
  probs = torch.stack([F.softmax(t / temperature, -1) for t in teacher_logits]).mean(0)
  kl = F.kl_div(F.log_softmax(logits / temperature, -1), probs, reduction='batchmean')
  return (1 - alpha) * F.cross_entropy(logits, labels) + alpha * temperature**2 * kl


def measure(arch, mode, args, teacher_arch, channels_last):
  torch.manual_seed(0)
  device = torch.device(args.device)
  fmt = torch.channels_last if channels_last else torch.contiguous_format
  model = get_model(arch, args.classes).to(device, memory_format=fmt).train()
  teachers = [
    get_model(teacher_arch, args.classes).to(device, memory_format=fmt).eval()
    for _ in range(int(mode[2:]) if mode != 'teacher' else 0)
  ]
  opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
  images = torch.randn(args.batch, 3, args.image, args.image, device=device).contiguous(
    memory_format=fmt
  )
  labels = torch.randint(0, args.classes, (args.batch,), device=device)

  def step():
    if teachers:
      with torch.no_grad():
        teacher_logits = [t(images) for t in teachers]
      loss = kd_loss(model(images), teacher_logits, labels)
    else:
      loss = F.cross_entropy(model(images), labels)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss

  sync = torch.cuda.synchronize if device.type == 'cuda' else (lambda: None)
  for _ in range(args.warmup):
    step()
  sync()
  if device.type == 'cuda':
    torch.cuda.reset_peak_memory_stats()
  start = time.perf_counter()
  for _ in range(args.steps):
    loss = step()
  loss.item()
  sync()
  seconds = (time.perf_counter() - start) / args.steps
  peak = torch.cuda.max_memory_allocated() / 2**20 if device.type == 'cuda' else None
  return {
    'framework': 'torch',
    'model': arch,
    'teacher': teacher_arch or '',
    'mode': mode,
    'parallel': 'channels_last' if channels_last else 'NCHW',
    'dtype': 'float32',
    'device': torch.cuda.get_device_name()
    if device.type == 'cuda'
    else f'cpu, {torch.get_num_threads()} threads',
    'batch': args.batch,
    'images_per_s': args.batch / seconds,
    'ms_per_step': 1000 * seconds,
    'compile_s': None,
    'peak_mib': peak,
  }


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--models', default='resnet20')
  parser.add_argument('--kd_pairs', default='resnet20-resnet8')
  parser.add_argument('--modes', default='teacher,kd1,kd3')
  parser.add_argument('--batch', type=int, default=128)
  parser.add_argument('--image', type=int, default=32)
  parser.add_argument('--classes', type=int, default=100)
  parser.add_argument('--steps', type=int, default=5)
  parser.add_argument('--warmup', type=int, default=1)
  parser.add_argument('--threads', type=int, default=0, help='CPU threads (0: torch default)')
  parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
  args = parser.parse_args()
  if args.threads:
    torch.set_num_threads(args.threads)
  for mode in args.modes.split(','):
    pairs = (
      [(m, None) for m in args.models.split(',')]
      if mode == 'teacher'
      else [(p.split('-')[1], p.split('-')[0]) for p in args.kd_pairs.split(',')]
    )
    for arch, teacher_arch in pairs:
      for channels_last in (False, True):
        print(json.dumps(measure(arch, mode, args, teacher_arch, channels_last)), flush=True)


if __name__ == '__main__':
  main()
