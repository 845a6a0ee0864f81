"""jebm.ops.conv2d against lax.conv_general_dilated; jebm.xla_flags."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import flax.linen as nn

from jebm import ops, xla_flags
from jebm.energy import energy_and_grad, from_model

# (height, width, c_in, c_out, kernel, stride): strided (phase path; odd and even sizes, padding
# on one or both sides), stride-1 stems (col2im path), stride-1 wide layers (XLA's transpose).
CASES = [
  (8, 8, 4, 6, 3, 2),
  (7, 9, 3, 5, 3, 2),
  (28, 28, 8, 4, 3, 2),
  (9, 9, 2, 3, 4, 3),
  (8, 8, 1, 5, 3, 1),
  (7, 6, 3, 4, 3, 1),
  (6, 6, 16, 8, 3, 1),
  (5, 5, 4, 4, 1, 1),
]


def _inputs(case, seed=0):
  height, width, c_in, c_out, size, _ = case
  kx, kk, kd = jax.random.split(jax.random.key(seed), 3)
  x = jax.random.normal(kx, (3, height, width, c_in))
  kernel = jax.random.normal(kk, (size, size, c_in, c_out)) / size
  return x, kernel, kd


@pytest.mark.parametrize("case", CASES)
def test_conv2d_values_and_gradients_match_lax(case):
  stride = case[-1]
  x, kernel, kd = _inputs(case)
  dy = jax.random.normal(kd, ops.xla_conv(x, kernel, stride).shape)

  def value_and_vjp(conv):
    y, vjp = jax.jit(lambda: jax.vjp(lambda a, b: conv(a, b, stride), x, kernel))()
    return y, *jax.jit(vjp)(dy)

  (want, want_dx, want_dk), (got, got_dx, got_dk) = map(value_and_vjp, (ops.xla_conv, ops.conv2d))
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(got_dx, want_dx, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(got_dk, want_dk, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("case", [CASES[0], CASES[4]])
def test_conv2d_second_order_gradients_match_lax(case):
  """d/dkernel of |d energy / dx|^2: what the KL-through-sampler term differentiates."""
  stride = case[-1]
  x, kernel, _ = _inputs(case, seed=1)

  def grad_norm(conv, k):
    dx = jax.grad(lambda a: jnp.sum(jnp.tanh(conv(a, k, stride))))(x)
    return jnp.sum(dx**2)

  want = jax.grad(lambda k: grad_norm(ops.xla_conv, k))(kernel)
  got = jax.grad(lambda k: grad_norm(ops.conv2d, k))(kernel)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_use_fast_cpu_flags_keeps_user_values(monkeypatch):
  monkeypatch.setenv(
    "XLA_FLAGS", "--xla_cpu_use_onednn=false --xla_force_host_platform_device_count=2"
  )
  value = xla_flags.use_fast_cpu_flags()
  assert "--xla_cpu_use_onednn=false" in value and "--xla_cpu_use_onednn=true" not in value
  assert "--xla_cpu_experimental_ynn_fusion_type=" in value
  assert "--xla_force_host_platform_device_count=2" in value
  assert xla_flags.use_fast_cpu_flags() == value  # idempotent


def test_import_jebm_sets_the_flags_and_xla_accepts_them():
  """In a fresh process, ``import jebm`` alone sets the options; XLA aborts on an unknown flag at
  backend start-up, so one computation checks that it accepts them."""
  code = (
    "import os, jebm, jax.numpy as jnp; print(os.environ['XLA_FLAGS']);"
    "print(float(jnp.ones((4, 4)).sum()))"
  )
  env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", xla_flags.OPT_OUT)}
  out = subprocess.run(
    [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
  )
  assert out.returncode == 0, out.stderr[-2000:]
  flags_line, total = out.stdout.strip().splitlines()
  assert flags_line == " ".join(
    xla_flags._flag(k, v) for k, v in xla_flags.FAST_CPU_OPTIONS.items()
  )
  assert total == "16.0"


def test_apply_on_import_opts_out_and_warns_when_too_late(monkeypatch):
  monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
  monkeypatch.setenv(xla_flags.OPT_OUT, "1")
  xla_flags.apply_on_import()
  assert os.environ["XLA_FLAGS"] == "--xla_force_host_platform_device_count=2"
  monkeypatch.delenv(xla_flags.OPT_OUT)
  jnp.ones(1).block_until_ready()  # JAX's backend has started: setting the flags changes nothing
  with pytest.warns(UserWarning, match="imported after JAX's first computation"):
    xla_flags.apply_on_import()
  assert os.environ["XLA_FLAGS"] == "--xla_force_host_platform_device_count=2"
  monkeypatch.setattr(xla_flags, "_backends_started", lambda: False)
  xla_flags.apply_on_import()
  assert "--xla_cpu_use_onednn=true" in os.environ["XLA_FLAGS"]


@pytest.mark.parametrize("case", [c for c in CASES if c[-1] > 1] + [CASES[4]])
def test_col2im_input_grad_matches_lax_for_any_stride(case):
  """The col2im path (stem layers; the levers benchmark uses it strided too)."""
  stride = case[-1]
  x, kernel, kd = _inputs(case)
  dy = jax.random.normal(kd, ops.xla_conv(x, kernel, stride).shape)
  want = jax.vjp(lambda a: ops.xla_conv(a, kernel, stride), x)[1](dy)[0]
  got = ops._col2im_input_grad(dy, kernel, x.shape, stride)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("case", [CASES[0], CASES[4]])
def test_conv2d_forward_mode_and_vmap_match_lax(case):
  """jvp in x and kernel, jacfwd == jacrev, and vmap over x or over kernels (an ensemble)."""
  stride = case[-1]
  x, kernel, kd = _inputs(case, seed=2)
  tx, tk = jax.random.normal(kd, x.shape), jnp.ones_like(kernel)
  jvp = lambda conv: jax.jvp(lambda a, b: conv(a, b, stride), (x, kernel), (tx, tk))
  (want, want_t), (got, got_t) = jvp(ops.xla_conv), jax.jit(lambda: jvp(ops.conv2d))()
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(got_t, want_t, rtol=1e-4, atol=1e-4)
  f = lambda a: jnp.sum(jnp.tanh(ops.conv2d(a, kernel, stride)))
  np.testing.assert_allclose(jax.jacfwd(f)(x[:1]), jax.grad(f)(x[:1]), rtol=1e-4, atol=1e-5)
  kernels = jnp.stack([kernel, -kernel])
  np.testing.assert_allclose(
    jax.vmap(lambda k: ops.conv2d(x, k, stride))(kernels),
    jax.vmap(lambda k: ops.xla_conv(x, k, stride))(kernels),
    rtol=1e-5,
    atol=1e-5,
  )
  np.testing.assert_allclose(
    jax.vmap(lambda a: ops.conv2d(a[None], kernel, stride))(x),
    ops.xla_conv(x, kernel, stride)[:, None],
    rtol=1e-5,
    atol=1e-5,
  )


class _Net(nn.Module):
  """A small conv energy with the given layers: (features, kernel, stride, padding, bias)."""

  layers: tuple
  remat: bool = False

  @nn.compact
  def __call__(self, x, y=None):
    conv = nn.remat(nn.Conv) if self.remat else nn.Conv
    h = x
    for features, kernel, stride, padding, bias in self.layers:
      h = nn.swish(conv(features, kernel, (stride, stride), padding, use_bias=bias)(h))
    return nn.Dense(1)(jnp.mean(h, axis=(1, 2)) if h.ndim == 4 else h)[:, 0]


NETS = {
  "strided": _Net(((4, (3, 3), 1, "SAME", True), (4, (3, 3), 2, "SAME", True))),
  "non_square_valid": _Net(((4, (3, 1), 1, "SAME", True), (4, (2, 2), 2, "VALID", False))),
  "no_bias_even_kernel": _Net(((4, (4, 4), 2, "SAME", False), (3, (1, 1), 1, "SAME", False))),
  "remat": _Net(((4, (3, 3), 2, "SAME", True),), remat=True),
}


@pytest.mark.parametrize("name", sorted(NETS))
def test_with_fast_convs_keeps_values_and_derivatives(name):
  """The transformed energy equals the plain one in value, input gradient, Hessian-vector
  product and forward-mode derivative, on several conv networks."""
  model, x = NETS[name], jax.random.uniform(jax.random.key(0), (2, 7, 7, 2))
  variables = model.init(jax.random.key(1), x)
  plain = lambda x_: model.apply(variables, x_)
  fast = ops.with_fast_convs(plain)
  v = jnp.sin(jnp.arange(x.size, dtype=jnp.float32)).reshape(x.shape)
  grad = lambda fn: jax.grad(lambda x_: jnp.sum(fn(x_)))
  checks = {
    "value": lambda fn: fn(x),
    "grad": lambda fn: grad(fn)(x),
    "hvp": lambda fn: jax.jvp(grad(fn), (x,), (v,))[1],
    "jvp": lambda fn: jax.jvp(fn, (x,), (v,))[1],
  }
  for check, run in checks.items():
    want, got = jax.jit(lambda: run(plain))(), jax.jit(lambda: run(fast))()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5, err_msg=check)


def test_with_fast_convs_swaps_same_convolutions_and_leaves_the_rest():
  class Plain(nn.Module):
    @nn.compact
    def __call__(self, x, y=None):
      h = nn.swish(nn.Conv(8, (3, 3), padding="SAME")(x))
      h = nn.swish(nn.Conv(8, (3, 3), strides=(2, 2), padding="SAME")(h))
      h = nn.swish(nn.Conv(8, (3, 3), strides=(2, 2), padding="VALID")(h))  # left as it is
      return nn.Dense(1)(jnp.mean(h, axis=(1, 2)))[:, 0]

  x = jax.random.uniform(jax.random.key(0), (2, 8, 8, 1))
  model = Plain()
  variables = model.init(jax.random.key(1), x)
  plain = lambda x_, y=None: model.apply(variables, x_)
  fast = ops.with_fast_convs(plain)
  assert ops.with_fast_convs(fast) is fast
  grad = lambda fn: jax.grad(lambda x_: jnp.sum(fn(x_)))
  got = jax.jit(lambda x_: energy_and_grad(plain, x_)[1])(x)
  np.testing.assert_allclose(got, jax.jit(grad(plain))(x), rtol=1e-4, atol=1e-7)
  np.testing.assert_allclose(from_model(model.apply, variables)(x), plain(x), rtol=1e-6)
  # XLA's strided input gradient dilates the cotangent; the swapped SAME one does not.
  dilated = lambda fn: str(jax.make_jaxpr(grad(fn))(x)).count("lhs_dilation=(2, 2)")
  assert (dilated(plain), dilated(fast)) == (2, 1)
  with ops.xla_conv_gradients():  # the benchmark's ablation keeps XLA's gradients
    assert dilated(fast) == 2
  # Under vmap, and differentiated twice (the KL term differentiates through a chain).
  per_example = jax.jit(jax.vmap(lambda xi: fast(xi[None])[0]))
  np.testing.assert_allclose(per_example(x), plain(x), rtol=1e-6)
  twice = lambda fn: jax.jit(jax.grad(lambda x_: jnp.sum(grad(fn)(x_) ** 2)))(x)
  np.testing.assert_allclose(twice(fast), twice(plain), rtol=1e-3, atol=1e-6)
  # A network without convolutions passes through unchanged.
  mlp = lambda x_: jnp.sum(jnp.tanh(x_.reshape(2, -1) @ jnp.ones((64, 3))), axis=1)
  assert str(jax.make_jaxpr(ops.with_fast_convs(mlp))(x)) == str(jax.make_jaxpr(mlp)(x))
