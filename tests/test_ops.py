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
  want = ops.xla_conv(x, kernel, stride)
  got = ops.conv2d(x, kernel, stride)
  assert got.shape == want.shape
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  dy = jax.random.normal(kd, want.shape)
  want_dx, want_dk = jax.vjp(lambda a, b: ops.xla_conv(a, b, stride), x, kernel)[1](dy)
  got_dx, got_dk = jax.vjp(lambda a, b: ops.conv2d(a, b, stride), x, kernel)[1](dy)
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


def test_with_fast_convs_swaps_a_plain_flax_models_same_convolutions():
  class Plain(nn.Module):
    @nn.compact
    def __call__(self, x, y=None):
      h = nn.swish(nn.Conv(8, (3, 3), padding="SAME")(x))
      h = nn.swish(nn.Conv(8, (3, 3), strides=(2, 2), padding="SAME")(h))
      h = nn.swish(nn.Conv(8, (3, 3), strides=(2, 2), padding="VALID")(h))  # left as it is
      return nn.Dense(1)(jnp.mean(h, axis=(1, 2)))[:, 0]

  x = jax.random.uniform(jax.random.key(0), (2, 8, 8, 1))
  model = Plain()
  plain = from_model(model.apply, model.init(jax.random.key(1), x))
  fast = ops.with_fast_convs(plain)
  np.testing.assert_allclose(fast(x), plain(x), rtol=1e-6)
  grad = lambda fn: jax.grad(lambda x_: jnp.sum(fn(x_)))
  np.testing.assert_allclose(grad(fast)(x), grad(plain)(x), rtol=1e-4, atol=1e-7)
  np.testing.assert_allclose(energy_and_grad(plain, x)[1], grad(plain)(x), rtol=1e-4, atol=1e-7)
  # XLA's strided input gradient dilates the cotangent; the swapped SAME one does not.
  dilated = lambda fn: str(jax.make_jaxpr(grad(fn))(x)).count("lhs_dilation=(2, 2)")
  assert (dilated(plain), dilated(fast)) == (2, 1)
  with ops.xla_conv_gradients():  # the benchmark's ablation keeps XLA's gradients
    assert dilated(fast) == 2
  # Under jit and vmap, and differentiated twice (the KL term differentiates through a chain).
  np.testing.assert_allclose(jax.jit(fast)(x), plain(x), rtol=1e-6)
  np.testing.assert_allclose(jax.vmap(lambda xi: fast(xi[None])[0])(x), plain(x), rtol=1e-6)
  twice = lambda fn: jax.grad(lambda x_: jnp.sum(grad(fn)(x_) ** 2))(x)
  np.testing.assert_allclose(twice(fast), twice(plain), rtol=1e-3, atol=1e-6)
