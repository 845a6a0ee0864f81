"""Convolution ops with gradients tuned for Langevin sampling on XLA CPU.

Langevin sampling differentiates the energy with respect to its input at every step, so its cost
is forward convolutions plus their input gradients. XLA lowers the input gradient of a strided
convolution to a convolution with ``lhs_dilation`` (zeros between the cotangent's entries), which
the CPU backend runs on a generic Eigen path, two to three times slower per FLOP than the forward
convolution. ``conv2d`` keeps XLA's forward convolution and weight gradient and computes the input
gradient as:

  * stride s > 1: the sub-pixel ("phase") decomposition: for each of the s*s output phases, a
    stride-1 convolution of the cotangent with the kernel taps of that phase, interleaved back by
    interior padding: no multiplications by inserted zeros, only plain convolutions;
  * stride 1 with few input channels (k*k*C_in <= 32, an image stem): one matmul of the cotangent
    with the kernel into per-tap columns, folded back by shifted adds (col2im);
  * otherwise, and on GPU/TPU (where the speed-up was not measured), XLA's own transpose.

Values and gradients equal ``lax.conv_general_dilated``'s up to float rounding (NHWC/HWIO,
'SAME' padding); reverse-over-reverse differentiation (the KL-through-sampler term) works;
forward-mode (``jax.jvp``) does not, as for any ``jax.custom_vjp``.
"""

import functools
from typing import Tuple

import jax
import jax.numpy as jnp
from jax import lax

_DIMS = ("NHWC", "HWIO", "NHWC")
_COL2IM_MAX_TAPS = 32


def _same_padding(size: int, kernel: int, stride: int) -> Tuple[int, Tuple[int, int]]:
  """Output size and (before, after) padding of a 'SAME' convolution along one axis."""
  out = -(-size // stride)
  pad = max((out - 1) * stride + kernel - size, 0)
  return out, (pad // 2, pad - pad // 2)


def xla_conv(x: jax.Array, kernel: jax.Array, stride: int) -> jax.Array:
  """XLA's convolution (``lax.conv_general_dilated``, NHWC/HWIO, 'SAME'): ``conv2d``'s forward."""
  return lax.conv_general_dilated(x, kernel, (stride, stride), "SAME", dimension_numbers=_DIMS)


def _spread(x: jax.Array, before: Tuple[int, int], after: Tuple[int, int], stride: int):
  """Places x [B, M, N, C] on a stride grid: interior padding stride - 1, edges before/after."""
  zero = jnp.zeros((), x.dtype)
  return lax.pad(
    x,
    zero,
    ((0, 0, 0), (before[0], after[0], stride - 1), (before[1], after[1], stride - 1), (0, 0, 0)),
  )


def _phase_input_grad(dy: jax.Array, kernel: jax.Array, x_shape, stride: int) -> jax.Array:
  """Input gradient of a strided 'SAME' conv: one stride-1 conv per output phase, interleaved."""
  _, height, width, _ = x_shape
  size = kernel.shape[0]
  _, (top, _) = _same_padding(height, size, stride)
  _, (left, _) = _same_padding(width, size, stride)
  rows, cols = -(-(height + top) // stride), -(-(width + left) // stride)
  total = None
  for r in range(min(stride, size)):
    for c in range(min(stride, size)):
      taps_r, taps_c = list(range(r, size, stride))[::-1], list(range(c, size, stride))[::-1]
      sub = kernel[jnp.array(taps_r)][:, jnp.array(taps_c)].transpose(0, 1, 3, 2)
      padded = _spread(
        dy, (len(taps_r) - 1, len(taps_c) - 1), (rows - dy.shape[1], cols - dy.shape[2]), 1
      )
      phase = lax.conv_general_dilated(padded, sub, (1, 1), "VALID", dimension_numbers=_DIMS)
      placed = _spread(phase, (r, c), (stride - 1 - r, stride - 1 - c), stride)
      total = placed if total is None else total + placed
  return total[:, top : top + height, left : left + width, :]


def _col2im_input_grad(dy: jax.Array, kernel: jax.Array, x_shape, stride: int = 1) -> jax.Array:
  """Input gradient of a 'SAME' conv: per-tap columns by one matmul, placed on the stride grid
  and added up (col2im)."""
  _, height, width, _ = x_shape
  size = kernel.shape[0]
  _, (top, bottom) = _same_padding(height, size, stride)
  _, (left, right) = _same_padding(width, size, stride)
  rows, cols = (dy.shape[1] - 1) * stride + 1, (dy.shape[2] - 1) * stride + 1
  columns = jnp.einsum("bhwo,ijco->bhwijc", dy, kernel)
  total = None
  for i in range(size):
    for j in range(size):
      after = (height + top + bottom - i - rows, width + left + right - j - cols)
      placed = _spread(columns[:, :, :, i, j, :], (i, j), after, stride)
      total = placed if total is None else total + placed
  return total[:, top : top + height, left : left + width, :]


def input_grad(dy: jax.Array, kernel: jax.Array, x_shape, stride: int) -> jax.Array:
  """d(sum(conv2d(x, kernel) * dy)) / dx for x of shape ``x_shape`` [B, H, W, C_in]."""
  size, _, c_in, _ = kernel.shape
  on_cpu = jax.default_backend() == "cpu"
  if on_cpu and stride > 1:
    return _phase_input_grad(dy, kernel, x_shape, stride)
  if on_cpu and size * size * c_in <= _COL2IM_MAX_TAPS:
    return _col2im_input_grad(dy, kernel, x_shape)
  x = jnp.zeros(x_shape, dy.dtype)
  return jax.vjp(lambda x_: xla_conv(x_, kernel, stride), x)[1](dy)[0]


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def conv2d(x: jax.Array, kernel: jax.Array, stride: int = 1) -> jax.Array:
  """NHWC 'SAME' convolution: x [B, H, W, C_in], kernel [k, k, C_in, C_out] ->
  [B, ceil(H / stride), ceil(W / stride), C_out]; same values as ``lax.conv_general_dilated``."""
  return xla_conv(x, kernel, stride)


def _conv2d_fwd(x, kernel, stride):
  return xla_conv(x, kernel, stride), (x, kernel)


def _conv2d_bwd(stride, residuals, dy):
  x, kernel = residuals
  dx = input_grad(dy, kernel, x.shape, stride)
  dkernel = jax.vjp(lambda k: xla_conv(x, k, stride), kernel)[1](dy)[0]
  return dx, dkernel


conv2d.defvjp(_conv2d_fwd, _conv2d_bwd)
