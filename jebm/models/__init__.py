"""Flax linen energy networks: ``model.apply(variables, x, y=None, update_stats=False) -> [B]``.

Every model returns energies [B] float32 with p(x) ∝ exp(-E(x)) (low energy = likely).
Variables: 'params', plus 'spectral' (power-iteration state) when spectral norm is on.
"""

from collections.abc import Callable
from typing import Any

import flax.linen as nn

from jebm.models.conditioning import CondBias, CondGain, condition_vector
from jebm.models.conv import ConvEnergy
from jebm.models.mlp import MLPEnergy
from jebm.models.resnet import (
  ResBlock,
  ResNetEnergy,
  resnet32,
  resnet32_large,
  resnet32_wider,
  resnet128,
)
from jebm.models.spectral import (
  ACTIVATIONS,
  SPECTRAL,
  SNConv,
  SNDense,
  get_activation,
  power_iteration,
  spectral_normalize,
)

MODELS: dict[str, Callable[..., nn.Module]] = {
  "mlp": MLPEnergy,
  "conv": ConvEnergy,
  "resnet32": resnet32,
  "resnet32_large": resnet32_large,
  "resnet32_wider": resnet32_wider,
  "resnet128": resnet128,
}


def get_model(name: str, **kwargs: Any) -> nn.Module:
  """Build the model registered as ``name`` (see ``MODELS``) with constructor ``kwargs``.

  Raises ValueError listing the known names when ``name`` is unknown.
  """
  if name not in MODELS:
    raise ValueError(f"unknown model {name!r}; known: {sorted(MODELS)}")
  return MODELS[name](**kwargs)


__all__ = [
  "ACTIVATIONS",
  "MODELS",
  "SPECTRAL",
  "CondBias",
  "CondGain",
  "ConvEnergy",
  "MLPEnergy",
  "ResBlock",
  "ResNetEnergy",
  "SNConv",
  "SNDense",
  "condition_vector",
  "get_activation",
  "get_model",
  "power_iteration",
  "resnet128",
  "resnet32",
  "resnet32_large",
  "resnet32_wider",
  "spectral_normalize",
]
