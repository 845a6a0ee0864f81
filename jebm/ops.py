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
'SAME' padding). ``conv2d`` is a JAX primitive that is bilinear in (x, kernel), with its
transpose in x given by ``input_grad``, so it differentiates like XLA's own convolution: reverse
over reverse (the KL-through-sampler term), ``jax.jvp``, ``jax.jacfwd`` and ``jax.hessian``.

``with_fast_convs(fn)`` gives any function the same input gradient: it re-evaluates ``fn``'s
traced graph with each such convolution (e.g. of ``flax.linen.Conv``) run as ``conv2d``. On the
CPU, ``jebm.energy.from_model`` and ``jebm.energy.energy_and_grad`` apply it to every energy, so
jebm's own layers (plain XLA convolutions) and a user's plain Flax layers train and sample equally
fast.
"""

import contextlib
import functools
from typing import Tuple

import jax
import jax.numpy as jnp
from jax import lax
from jax._src import core as jax_core
from jax.extend.core import Literal, Primitive
from jax.interpreters import ad, batching, mlir

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


def _zeros_like(shape, ref: jax.Array) -> jax.Array:
  """Zeros of ``shape`` in ref's dtype, varying over the same shard_map axes as ref (so that a
  vjp taken at them has cotangents of ref's kind)."""
  return jax_core.auto_insert_reshard(jnp.zeros(shape, ref.dtype), ref)[0]


def input_grad(dy: jax.Array, kernel: jax.Array, x_shape, stride: int) -> jax.Array:
  """d(sum(conv2d(x, kernel) * dy)) / dx for x of shape ``x_shape`` [B, H, W, C_in]."""
  size, _, c_in, _ = kernel.shape
  on_cpu = jax.default_backend() == "cpu"
  if on_cpu and stride > 1:
    return _phase_input_grad(dy, kernel, x_shape, stride)
  if on_cpu and size * size * c_in <= _COL2IM_MAX_TAPS:
    return _col2im_input_grad(dy, kernel, x_shape)
  return jax.vjp(lambda x_: xla_conv(x_, kernel, stride), _zeros_like(x_shape, dy))[1](dy)[0]


conv2d_p = Primitive("jebm_conv2d")  # bilinear in (x, kernel); its transpose in x is input_grad


def conv2d(x: jax.Array, kernel: jax.Array, stride: int = 1) -> jax.Array:
  """NHWC 'SAME' convolution: x [B, H, W, C_in], kernel [k, k, C_in, C_out] ->
  [B, ceil(H / stride), ceil(W / stride), C_out]; same values as ``lax.conv_general_dilated``,
  with ``input_grad`` as its gradient in x. Differentiable in both modes, to any order."""
  # Inside shard_map, a replicated operand is marked as varying over the device axes like
  # lax's own operations do, so that the gradients of replicated params are summed over devices.
  x, kernel = jax_core.auto_insert_reshard(x, kernel)
  return conv2d_p.bind(x, kernel, stride=int(stride))


def _conv2d_shape(x, kernel, *, stride):
  batch, height, width, _ = x.shape
  return x.update(shape=(batch, -(-height // stride), -(-width // stride), kernel.shape[3]))


def _transpose_x(ct, x, kernel, *, stride):
  return input_grad(ct, kernel, x.aval.shape, stride)


def _transpose_kernel(ct, x, kernel, *, stride):
  zeros = _zeros_like(kernel.aval.shape, ct)
  return jax.vjp(lambda k: xla_conv(x, k, stride), zeros)[1](ct)[0]


def _batch(args, dims, *, stride):
  """vmap: a mapped x folds into the batch axis; a mapped kernel runs one conv per kernel."""
  (x, kernel), (x_dim, kernel_dim) = args, dims
  x = x if x_dim is None else jnp.moveaxis(x, x_dim, 0)
  if kernel_dim is None:
    y = conv2d(x.reshape((-1,) + x.shape[2:]), kernel, stride)
    return y.reshape(x.shape[:2] + y.shape[1:]), 0
  kernel = jnp.moveaxis(kernel, kernel_dim, 0)
  xs = [x if x_dim is None else x[i] for i in range(kernel.shape[0])]
  return jnp.stack([conv2d(xi, ki, stride) for xi, ki in zip(xs, kernel)]), 0


def _conv2d_impl(x, kernel, *, stride):
  return xla_conv(x, kernel, stride)


conv2d_p.def_impl(_conv2d_impl)
conv2d_p.def_abstract_eval(_conv2d_shape)
mlir.register_lowering(conv2d_p, mlir.lower_fun(_conv2d_impl, multiple_results=False))
ad.defbilinear(conv2d_p, _transpose_x, _transpose_kernel)
batching.primitive_batchers[conv2d_p] = _batch


def _same_2d_stride(eqn, x, kernel):
  """The stride when a ``conv_general_dilated`` equation is a 2-D NHWC/HWIO 'SAME' convolution
  with a square kernel, equal strides, no dilation and one group (what ``conv2d`` computes);
  else None."""
  p = eqn.params
  dims = p["dimension_numbers"]
  if (
    x.ndim != 4
    or (dims.lhs_spec, dims.rhs_spec, dims.out_spec) != ((0, 3, 1, 2), (3, 2, 0, 1), (0, 3, 1, 2))
    or p["feature_group_count"] != 1
    or p["batch_group_count"] != 1
    or tuple(p["lhs_dilation"]) != (1, 1)
    or tuple(p["rhs_dilation"]) != (1, 1)
    or kernel.shape[0] != kernel.shape[1]
    or p["window_strides"][0] != p["window_strides"][1]
    or p.get("preferred_element_type") not in (None, x.dtype)
    or x.dtype != kernel.dtype
  ):
    return None
  stride = int(p["window_strides"][0])
  same = tuple(_same_padding(n, kernel.shape[0], stride)[1] for n in x.shape[1:3])
  return stride if tuple(map(tuple, p["padding"])) == same else None


def _eval_swapping_convs(jaxpr, consts, args):
  """Evaluates ``jaxpr`` like ``jax.core.eval_jaxpr``, with every convolution that ``conv2d``
  computes (see ``_same_2d_stride``) run as ``conv2d``, also inside nested ``jit``s."""
  env = {}
  read = lambda v: v.val if isinstance(v, Literal) else env[v]
  env.update(zip(jaxpr.constvars, consts))
  env.update(zip(jaxpr.invars, args))
  for eqn in jaxpr.eqns:
    values = [read(v) for v in eqn.invars]
    name = eqn.primitive.name
    stride = _same_2d_stride(eqn, *values) if name == "conv_general_dilated" else None
    if stride is not None:
      out = [conv2d(values[0], values[1], stride)]
    elif name in ("pjit", "jit"):
      inner = eqn.params["jaxpr"]
      out = _eval_swapping_convs(inner.jaxpr, inner.consts, values)
    else:
      out = eqn.primitive.bind(*values, **eqn.primitive.get_bind_params(eqn.params))
      out = out if eqn.primitive.multiple_results else [out]
    env.update(zip(eqn.outvars, out))
  return [read(v) for v in jaxpr.outvars]


_SWAP = {"on": True}  # read when a function of with_fast_convs is traced


@contextlib.contextmanager
def xla_conv_gradients():
  """Within this context, functions of ``with_fast_convs`` traced here keep XLA's own
  convolution gradients (for ablations, e.g. the benchmark's ``-convgrad`` rows)."""
  before = _SWAP["on"]
  _SWAP["on"] = False
  try:
    yield
  finally:
    _SWAP["on"] = before


def with_fast_convs(fn):
  """``fn`` with the fast convolution input gradient of ``conv2d`` wherever its traced graph has
  a convolution that ``conv2d`` computes (2-D NHWC/HWIO 'SAME', square kernel, equal strides, no
  dilation, one group: e.g. ``flax.linen.Conv(..., padding="SAME")``). Values are the same up
  to float rounding; other convolutions and operations (also those inside ``jax.checkpoint`` or
  ``scan``) run as they are. ``jebm.energy.from_model`` and ``energy_and_grad`` apply it on the
  CPU; applying it twice is applying it once.

  Args:
    fn: a function of arrays (any pytrees), e.g. an energy fn ``E(x, y) -> [B]``.

  Returns:
    A function with ``fn``'s signature and outputs, differentiable in both modes.
  """

  if getattr(fn, "_jebm_fast_convs", False):
    return fn

  @functools.wraps(fn)
  def swapped(*args, **kwargs):
    if not _SWAP["on"]:
      return fn(*args, **kwargs)
    closed, out_shape = jax.make_jaxpr(fn, return_shape=True)(*args, **kwargs)
    out = _eval_swapping_convs(closed.jaxpr, closed.consts, jax.tree.leaves((args, kwargs)))
    return jax.tree.unflatten(jax.tree.structure(out_shape), out)

  swapped._jebm_fast_convs = True
  return swapped
