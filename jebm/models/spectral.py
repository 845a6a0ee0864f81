"""Spectral normalisation and the linear layers that use it.

Spectral normalisation (Miyato et al., 2018) divides a kernel W, reshaped to a matrix
M = W.reshape(-1, out) of shape [n_in, n_out], by an estimate sigma of its largest singular
value. The estimate comes from power iteration with persistent vectors stored in the Flax
collection ``'spectral'`` (the model state), per layer:

    u     [n_out]  right singular vector estimate
    v     [n_in]   left singular vector estimate
    sigma []       v @ M @ u, kept for logging (the forward pass recomputes it from u, v and W)

``update_stats=True`` runs ``power_iterations`` steps from the stored u and writes u, v and
sigma (the caller passes ``mutable=['spectral']``); the trainer does this once per training
step. ``update_stats=False`` uses the stored u and v as they are and writes nothing, so the
layer is a pure function of (variables, inputs): Langevin sampling can differentiate it
w.r.t. its input. Both paths compute sigma = v @ M @ u with u and v held constant
(stop_gradient) and W differentiable, so gradients w.r.t. the parameters include the
d sigma / d W term, and the output of an update call equals a pure call with the new state.

Why not ``flax.linen.SpectralNorm``: it stores only u under the given collection, with
'/'-joined names ("Dense_0/kernel/u"), re-runs a power iteration inside every pure call
(sigma then depends on W through a fresh iteration, the stored sigma is unused), and has no
clipped mode. The layers here keep the state explicit, small and checkpoint-friendly.

The module also holds the activation table shared by the energy networks.
"""

from collections.abc import Callable
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jebm.ops import xla_conv

Dtype = Any

SPECTRAL = "spectral"  # name of the variable collection that holds the power-iteration state

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
  "swish": nn.swish,
  "leaky_relu": functools.partial(nn.leaky_relu, negative_slope=0.2),  # IGEBM / TF default
  "relu": nn.relu,
  "softplus": nn.softplus,
}


def get_activation(name: str) -> Callable[[jax.Array], jax.Array]:
  """Return the elementwise activation called ``name`` (see ``ACTIVATIONS``).

  "leaky_relu" has slope 0.2 for negative inputs, as in the IGEBM code (TensorFlow's
  default). Raises ValueError for an unknown name.
  """
  if name not in ACTIVATIONS:
    raise ValueError(f"unknown activation {name!r}; known: {sorted(ACTIVATIONS)}")
  return ACTIVATIONS[name]


def _l2_normalize(v: jax.Array, eps: float) -> jax.Array:
  return v / (jnp.linalg.norm(v) + eps)


def power_iteration(
  matrix: jax.Array, u: jax.Array, num_steps: int, eps: float = 1e-12
) -> tuple[jax.Array, jax.Array]:
  """Run ``num_steps`` power-iteration steps on ``matrix`` [n_in, n_out] from ``u`` [n_out].

  One step is v = normalise(M u), u = normalise(M^T v). Returns (u [n_out], v [n_in]), unit
  vectors such that v @ M @ u estimates the top singular value of M from below.
  """
  if num_steps < 1:
    raise ValueError(f"power iteration needs num_steps >= 1, got {num_steps}")
  for _ in range(num_steps):
    v = _l2_normalize(matrix @ u, eps)
    u = _l2_normalize(matrix.T @ v, eps)
  return u, v


def spectral_normalize(
  module: nn.Module,
  kernel: jax.Array,
  *,
  update_stats: bool,
  power_iterations: int = 1,
  clip: bool = False,
  eps: float = 1e-12,
) -> jax.Array:
  """Return ``kernel / sigma``, using and maintaining ``module``'s 'spectral' variables.

  Call from inside the compact ``__call__`` of the layer that owns ``kernel`` (shape
  [..., n_out]; the leading axes are flattened to n_in). Creates variables 'u' [n_out],
  'v' [n_in] and 'sigma' [] in the 'spectral' collection of ``module``. At init and when
  ``update_stats`` is True, runs ``power_iterations`` steps from the stored u and writes
  u, v, sigma; otherwise reads them only (pure). With ``clip=True`` the kernel is divided
  by max(sigma, 1) instead: kernels with spectral norm <= 1 pass unchanged (the IGEBM
  code's "lower_bound" mode, used for the near-zero-initialised second conv of each block).
  Returns an array of ``kernel``'s shape and dtype.
  """
  matrix = kernel.reshape(-1, kernel.shape[-1])
  n_in, n_out = matrix.shape
  u_var = module.variable(
    SPECTRAL,
    "u",
    lambda: _l2_normalize(
      jax.random.normal(module.make_rng("params"), (n_out,), kernel.dtype), eps
    ),
  )
  v_var = module.variable(SPECTRAL, "v", lambda: jnp.zeros((n_in,), kernel.dtype))
  sigma_var = module.variable(SPECTRAL, "sigma", lambda: jnp.ones((), kernel.dtype))

  u, v = u_var.value, v_var.value
  update = update_stats or module.is_initializing()
  if update:
    u, v = power_iteration(jax.lax.stop_gradient(matrix), u, power_iterations, eps)
  u, v = jax.lax.stop_gradient(u), jax.lax.stop_gradient(v)
  sigma = v @ matrix @ u
  if update:
    u_var.value, v_var.value = u, v
    sigma_var.value = jax.lax.stop_gradient(sigma)
  divisor = jnp.maximum(sigma, 1.0) if clip else jnp.maximum(sigma, eps)
  return kernel / divisor


def _check_in_features(module: nn.Module, x: jax.Array, in_axis_size: int | None) -> None:
  """Raise a clear ValueError when ``x``'s last axis does not match the existing kernel."""
  if in_axis_size is not None and x.shape[-1] != in_axis_size:
    where = "/".join(module.path) or type(module).__name__
    raise ValueError(
      f"{where}: expected input of shape (..., {in_axis_size}) as at init, "
      f"got shape {tuple(x.shape)}"
    )


def _existing_in_size(module: nn.Module) -> int | None:
  if module.has_variable("params", "kernel"):
    return module.get_variable("params", "kernel").shape[-2]
  return None


class SNDense(nn.Module):
  """Dense layer with optional spectral normalisation: [..., D_in] -> [..., features].

  Attributes:
    features: output width.
    use_bias: add a learned bias (never normalised).
    spectral_norm: divide the kernel by its spectral-norm estimate (see module docstring).
    spectral_clip: divide by max(sigma, 1) instead of sigma.
    power_iterations: power-iteration steps per ``update_stats=True`` call.
    kernel_init: initialiser of the [D_in, features] kernel.
    dtype: computation dtype (inputs and kernel are cast to it); params are param_dtype.
  """

  features: int
  use_bias: bool = True
  spectral_norm: bool = False
  spectral_clip: bool = False
  power_iterations: int = 1
  kernel_init: Callable = nn.initializers.lecun_normal()
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, update_stats: bool = False) -> jax.Array:
    """Apply the layer to x [..., D_in]; returns [..., features] in ``dtype``."""
    _check_in_features(self, x, _existing_in_size(self))
    kernel = self.param("kernel", self.kernel_init, (x.shape[-1], self.features), self.param_dtype)
    if self.spectral_norm:
      kernel = spectral_normalize(
        self,
        kernel,
        update_stats=update_stats,
        power_iterations=self.power_iterations,
        clip=self.spectral_clip,
      )
    y = jnp.dot(x.astype(self.dtype), kernel.astype(self.dtype))
    if self.use_bias:
      y = y + self.param("bias", nn.initializers.zeros, (self.features,), self.param_dtype).astype(
        self.dtype
      )
    return y


class SNConv(nn.Module):
  """2-D convolution (NHWC, 'SAME' padding) with optional spectral normalisation.

  Maps x [B, H, W, C_in] to [B, ceil(H / strides), ceil(W / strides), features]. The kernel
  [k, k, C_in, features] is normalised as a [k*k*C_in, features] matrix.

  Attributes: as ``SNDense``, plus ``kernel_size`` (square, int) and ``strides`` (int).
  """

  features: int
  kernel_size: int = 3
  strides: int = 1
  use_bias: bool = True
  spectral_norm: bool = False
  spectral_clip: bool = False
  power_iterations: int = 1
  kernel_init: Callable = nn.initializers.lecun_normal()
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, update_stats: bool = False) -> jax.Array:
    """Apply the convolution to x [B, H, W, C_in]; returns [B, H', W', features] in ``dtype``."""
    _check_in_features(self, x, _existing_in_size(self))
    k = self.kernel_size
    kernel = self.param(
      "kernel", self.kernel_init, (k, k, x.shape[-1], self.features), self.param_dtype
    )
    if self.spectral_norm:
      kernel = spectral_normalize(
        self,
        kernel,
        update_stats=update_stats,
        power_iterations=self.power_iterations,
        clip=self.spectral_clip,
      )
    # A plain XLA convolution: jebm.energy.from_model gives it the fast gradients on the CPU.
    y = xla_conv(x.astype(self.dtype), kernel.astype(self.dtype), self.strides)
    if self.use_bias:
      y = y + self.param("bias", nn.initializers.zeros, (self.features,), self.param_dtype).astype(
        self.dtype
      )
    return y
