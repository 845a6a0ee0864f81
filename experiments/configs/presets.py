"""Training recipes. Every field can be overridden by the flag of the same name.

The paper's recipes (Du & Mordatch 2019, appendix and code release) keep their own presets:
cifar10_uncond, cifar10_cond, imagenet32_cond, imagenet128_cond. The small presets are tuned
for a 2-core CPU.
"""

import dataclasses

from jebm.config import Config

# Paper: Adam(lr 3e-4... 1e-4, b1 0, b2 0.999) with gradient clipping, L2 coefficient 1, 60
# Langevin steps of size 10 with noise 0.005 and gradient clip 0.01, 95% replay, batch 128.
_PAPER = Config(
  dataset="cifar10",
  num_classes=0,
  model="resnet32_large",
  activation="leaky_relu",
  spectral_norm=True,
  langevin_steps=60,
  step_size=10.0,
  noise_scale=0.005,
  grad_clip=0.01,
  l2_coeff=1.0,
  learning_rate=3e-4,
  b1=0.0,
  b2=0.999,
  buffer_capacity=10000,
  reinit_prob=0.05,
  batch_size=128,
  num_steps=100000,
  checkpoint_every=1000,
  log_every=100,
  sample_every=1000,
)

PRESETS = {
  # The main job: conditional EBM on scikit-learn's 8x8 digits, a few minutes on 2 CPU cores.
  "default": Config(
    dataset="digits",
    num_classes=10,
    model="conv",
    features=(32, 64),
    activation="swish",
    langevin_steps=20,
    step_size=10.0,
    noise_scale=0.005,
    grad_clip=0.01,
    l2_coeff=0.1,
    learning_rate=1e-3,
    warmup_steps=100,
    buffer_capacity=10000,
    batch_size=128,
    num_steps=1500,
    checkpoint_every=500,
    log_every=100,
    sample_every=500,
    eval_langevin_steps=200,
    eval_num_samples=1000,
  ),
  # Tuned for a 30-minute budget on 2 CPU cores (--time_limit_minutes=30).
  "mnist_cond": Config(
    dataset="mnist",
    num_classes=10,
    model="conv",
    features=(16, 32, 64),
    activation="swish",
    langevin_steps=20,
    step_size=10.0,
    noise_scale=0.005,
    grad_clip=0.01,
    l2_coeff=0.1,
    learning_rate=1e-3,
    warmup_steps=200,
    buffer_capacity=10000,
    batch_size=128,
    num_steps=100000,
    checkpoint_every=500,
    log_every=100,
    sample_every=500,
    eval_langevin_steps=200,
  ),
  "toy2d": Config(
    dataset="toy2d/8gaussians",
    num_classes=0,
    model="mlp",
    features=(128, 128, 128),
    activation="swish",
    langevin_steps=20,
    step_size=0.005,
    noise_scale=0.1,
    grad_clip=0.0,
    x_min=-4.0,
    x_max=4.0,
    init_low=-3.0,
    init_high=3.0,
    l2_coeff=0.01,
    learning_rate=2e-3,
    batch_size=256,
    num_steps=2000,
    checkpoint_every=1000,
    log_every=250,
    sample_every=1000,
    eval_langevin_steps=1000,
  ),
  "cifar10_uncond": _PAPER,
  "cifar10_cond": dataclasses.replace(_PAPER, num_classes=10, model="resnet32", learning_rate=1e-4),
  "imagenet32_cond": dataclasses.replace(
    _PAPER,
    dataset="downsampled_imagenet/32x32",
    num_classes=1000,
    model="resnet32_wider",
    learning_rate=1e-4,
  ),
  "imagenet128_cond": dataclasses.replace(
    _PAPER,
    dataset="imagenet2012",
    num_classes=1000,
    model="resnet128",
    langevin_steps=50,
    step_size=100.0,
    learning_rate=1e-4,
    batch_size=32,
  ),
}
PRESETS["mnist_uncond"] = dataclasses.replace(PRESETS["mnist_cond"], num_classes=0)


def get_preset(name: str) -> Config:
  """The preset called ``name``; ValueError lists the known ones."""
  if name not in PRESETS:
    raise ValueError(f"unknown preset {name!r}; known: {sorted(PRESETS)}")
  return PRESETS[name]
