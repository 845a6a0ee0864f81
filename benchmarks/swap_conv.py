"""``ConvEnergy`` with a swappable convolution, for ablations of jebm's conv lowering.

``conv_energy_apply`` is ``ConvEnergy.apply`` (unconditional, no spectral norm) with any
``conv(x, kernel, stride)`` on the same variables, e.g. ``jebm.ops.xla_conv`` (XLA's own
gradient) or the im2col variants in ``benchmarks.levers``. ``PlainFlaxEnergy`` is the same
network as a user would write it in plain Flax layers.
"""

from typing import Any, Callable, Optional, Sequence

import jax
import flax.linen as nn
import jax.numpy as jnp

from jebm.models import ConvEnergy, get_activation


def conv_energy_apply(
  model: ConvEnergy,
  variables: Any,
  x: jax.Array,
  y: Optional[jax.Array] = None,
  *,
  conv: Callable,
  **unused,
) -> jax.Array:
  """``model.apply(variables, x)`` for an unconditional ``ConvEnergy`` without spectral norm,
  with ``conv(x, kernel, stride)`` as its convolution: energies [B] float32
  (low = likely)."""
  del y, unused
  if model.num_classes is not None or model.spectral_norm:
    raise ValueError("conv_energy_apply covers unconditional ConvEnergy without spectral norm")
  params, act, dtype = variables["params"], get_activation(model.activation), model.dtype

  def layer(name, h, stride):
    kernel = params[name]["kernel"].astype(dtype)
    return act(conv(h.astype(dtype), kernel, stride) + params[name]["bias"].astype(dtype))

  h = layer("stem", x, 1)
  for i in range(len(model.features)):
    h = layer(f"conv_{i}", h, 2)
  h = jnp.mean(h.astype(jnp.float32), axis=(1, 2))
  dense = params["dense"]
  h = act(jnp.dot(h.astype(dtype), dense["kernel"].astype(dtype)) + dense["bias"].astype(dtype))
  head = params["energy"]
  return (jnp.dot(h.astype(jnp.float32), head["kernel"]) + head["bias"])[:, 0]


class PlainFlaxEnergy(nn.Module):
  """What a user writes: ``ConvEnergy``'s unconditional network in plain ``flax.linen.Conv`` and
  ``Dense`` layers (same variable names and shapes, so it takes ``ConvEnergy``'s variables): jebm's
  speed on it comes only from ``import jebm`` and ``jebm.ops.with_fast_convs`` in the samplers."""

  features: Sequence[int]
  activation: str = "swish"

  @nn.compact
  def __call__(self, x, y=None):
    act = get_activation(self.activation)
    h = act(nn.Conv(self.features[0], (3, 3), padding="SAME", name="stem")(x))
    for i, width in enumerate(self.features):
      h = act(nn.Conv(width, (3, 3), strides=(2, 2), padding="SAME", name=f"conv_{i}")(h))
    h = act(nn.Dense(self.features[-1], name="dense")(jnp.mean(h, axis=(1, 2))))
    return nn.Dense(1, name="energy")(h)[:, 0]
