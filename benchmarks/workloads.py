"""The benchmark workloads: networks, shapes and sampler / trainer settings, shared by every
implementation (jebm's side builds them with jebm; the PyTorch side gets ``spec`` as JSON)."""

import dataclasses
import math
from typing import Any, Dict, List, Optional, Tuple

from jebm.langevin import LangevinConfig
from jebm.models import ConvEnergy, MLPEnergy
from jebm.train import TrainConfig

CONV_FEATURES = (64, 128, 256)
MLP_HIDDEN = (128, 128, 128)
# Narrower MLPs for the 2-D regime sweep: the issue calls the 2-D chain dispatch-bound, which
# holds for PyTorch only when the layers are this narrow (see benchmarks/README.md).
MLP_SWEEP_WIDTHS = (16, 32, 64)
ACTIVATION = "swish"
# IGEBM training settings, the same for jebm and PyTorch.
L2_COEFF, REINIT_PROB, LEARNING_RATE = 1.0, 0.05, 3e-4
IMAGE_LANGEVIN = dict(
  step_size=10.0, noise_scale=0.005, grad_clip=0.01, clip_mode="elementwise", x_min=0.0, x_max=1.0
)
TOY_STEP = 0.01
TOY_LANGEVIN = dict(
  step_size=TOY_STEP, noise_scale=math.sqrt(2 * TOY_STEP), grad_clip=None, x_min=None, x_max=None
)  # textbook ULA at temperature 1


@dataclasses.dataclass(frozen=True)
class Workload:
  """One benchmark workload.

  Attributes:
    name: key in the results, e.g. "mnist_sample".
    kind: "sample" (one Langevin chain of ``num_steps``) or "train" (one full training step).
    net: "conv" (``ConvEnergy(features)``) or "mlp" (``MLPEnergy(hidden)``).
    shape: one example's shape, NHWC for images, e.g. (28, 28, 1).
    batch: chains (sampling) or data batch size (training).
    num_steps: Langevin steps per chain.
    langevin: LangevinConfig keyword arguments other than num_steps.
    buffer_capacity: replay-buffer entries (training only).
    hidden: the MLP's hidden widths (net "mlp" only).
  """

  name: str
  kind: str
  net: str
  shape: Tuple[int, ...]
  batch: int
  num_steps: int
  langevin: Dict[str, Any]
  buffer_capacity: int = 10000
  hidden: Tuple[int, ...] = MLP_HIDDEN

  def model(self, dtype=None):
    """The jebm energy network (float32 unless ``dtype`` is given)."""
    kwargs = {} if dtype is None else {"dtype": dtype}
    if self.net == "conv":
      return ConvEnergy(features=CONV_FEATURES, activation=ACTIVATION, **kwargs)
    return MLPEnergy(hidden_sizes=self.hidden, activation=ACTIVATION, **kwargs)

  def langevin_config(self) -> LangevinConfig:
    """The sampler settings."""
    return LangevinConfig(num_steps=self.num_steps, **self.langevin)

  def train_config(self) -> TrainConfig:
    """IGEBM training settings: L2 coefficient 1, 5% fresh chains, uint8 replay buffer."""
    return TrainConfig(
      langevin=self.langevin_config(),
      l2_coeff=L2_COEFF,
      reinit_prob=REINIT_PROB,
      buffer_capacity=self.buffer_capacity,
      buffer_dtype="uint8",
    )

  @property
  def sample_steps(self) -> int:
    """Sample-steps in one repetition: batch x Langevin steps."""
    return self.batch * self.num_steps

  def spec(self) -> Dict[str, Any]:
    """Everything another implementation needs, as JSON-able values."""
    out = dataclasses.asdict(self)
    out.update(
      shape=list(self.shape),
      features=list(CONV_FEATURES),
      hidden=list(self.hidden),
      activation=ACTIVATION,
      l2_coeff=L2_COEFF,
      reinit_prob=REINIT_PROB,
      learning_rate=LEARNING_RATE,
      adam_b1=0.0,
      adam_b2=0.999,
      clip_std=3.0,
      clip_offset=0.1,
      eps=1e-8,
    )
    return out


def all_workloads(quick: bool = False, only: Optional[List[str]] = None) -> List[Workload]:
  """The issue's workloads plus the 2-D width sweep; ``quick`` shrinks batches, chains and
  buffers for a smoke run."""
  conv_batch, conv_steps = (16, 4) if quick else (128, 60)
  toy_batch, toy_steps = (256, 10) if quick else (1024, 100)
  capacity = 256 if quick else 10000
  out = []
  for prefix, shape in (("mnist", (28, 28, 1)), ("cifar", (32, 32, 3))):
    out.append(
      Workload(f"{prefix}_sample", "sample", "conv", shape, conv_batch, conv_steps, IMAGE_LANGEVIN)
    )
  out.append(Workload("mlp2d_sample", "sample", "mlp", (2,), toy_batch, toy_steps, TOY_LANGEVIN))
  for width in MLP_SWEEP_WIDTHS:
    out.append(
      Workload(
        f"mlp2d_w{width}_sample",
        "sample",
        "mlp",
        (2,),
        toy_batch,
        toy_steps,
        TOY_LANGEVIN,
        hidden=(width,) * len(MLP_HIDDEN),
      )
    )
  for prefix, shape in (("mnist", (28, 28, 1)), ("cifar", (32, 32, 3))):
    out.append(
      Workload(
        f"{prefix}_train",
        "train",
        "conv",
        shape,
        conv_batch,
        conv_steps,
        IMAGE_LANGEVIN,
        buffer_capacity=capacity,
      )
    )
  unknown = set(only or ()) - {w.name for w in out}
  if unknown:
    raise ValueError(f"unknown workload(s) {sorted(unknown)}; known: {[w.name for w in out]}")
  return [w for w in out if only is None or w.name in only]
