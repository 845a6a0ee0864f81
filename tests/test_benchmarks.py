"""Smoke test of the benchmark script's quick mode (jebm side only; not a speed test)."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks import fast_conv, run
from jebm.models import ConvEnergy

RESULT_KEYS = {"impl", "workload", "precision", "compile_s", "warmup_s", "reps", "median_s",
               "steps_per_s", "best_steps_per_s", "ratio_to_jebm", "ratio_to_jebm_best",
               "fraction_of_f32_limit", "fraction_of_f32_limit_best"}


def test_quick_mode_writes_well_formed_json(tmp_path, capsys):
  out = tmp_path / "results.json"
  workloads, impls = "mnist_sample,mlp2d_sample,mnist_train", "jebm,jebm+fastconv +xla-opts"
  assert run.main(["--quick", "--no-bf16", "--reps", "2", "--workloads", workloads,
                   "--impls", impls, "--out", str(out)]) == 0
  data = json.loads(out.read_text())
  assert {"environment", "settings", "peak_flops", "flops", "results", "targets"} <= set(data)
  assert data["peak_flops"]["jax_matmul_f32"] > 0 and data["peak_flops"]["jax_matmul_f32_best"] > 0
  assert all({"target", "impl", "stat", "value", "goal", "met"} <= set(t) for t in data["targets"])
  assert set(data["flops"]) == set(workloads.split(","))
  assert all(v["xla"] > 0 and v["analytic"] > 0 for v in data["flops"].values())
  rows = {(r["workload"], r["impl"]): r for r in data["results"]}
  fast = "jebm+fastconv +xla-opts"
  expected = {("mnist_sample", "jebm"), ("mnist_sample", fast), ("mlp2d_sample", "jebm"),
              ("mnist_train", "jebm"), ("mnist_train", fast), ("matmul", "jax matmul")}
  assert expected == set(rows)
  for key in expected - {("matmul", "jax matmul")}:
    row = rows[key]
    assert RESULT_KEYS <= set(row) and "error" not in row, row
    assert row["reps"] == 2 and row["steps_per_s"] > 0 and row["compile_s"] > 0
  assert rows[("mnist_sample", "jebm")]["ratio_to_jebm"] == pytest.approx(1.0)
  assert "mnist_sample" in capsys.readouterr().out


@pytest.mark.parametrize("shape", [(9, 9, 3), (8, 5, 4)])
@pytest.mark.parametrize("stride", [1, 2])
def test_fast_conv_gradients_match_xla(shape, stride):
  x = jax.random.normal(jax.random.key(0), (2, *shape))
  kernel = jax.random.normal(jax.random.key(1), (3, 3, shape[-1], 5))
  weights = jnp.arange(1.0, 6.0)

  def loss(conv):
    return lambda x, k: jnp.sum(conv(x, k, stride) * weights)

  want = jax.grad(loss(fast_conv.xla_conv), (0, 1))(x, kernel)
  got = jax.grad(loss(fast_conv.conv2d), (0, 1))(x, kernel)
  for a, b in zip(got, want):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_fast_conv_energy_matches_conv_energy():
  model = ConvEnergy(features=(8, 16))
  x = jax.random.uniform(jax.random.key(0), (3, 12, 12, 1))
  variables = model.init(jax.random.key(1), x)
  fast = fast_conv.FastConvModel(model)
  np.testing.assert_allclose(fast.apply(variables, x), model.apply(variables, x), atol=1e-6)
  grad = lambda apply: jax.grad(lambda x_: apply(variables, x_).sum())(x)
  np.testing.assert_allclose(grad(fast.apply), grad(model.apply), atol=1e-6)


@pytest.mark.parametrize("stride", [1, 2])
def test_fast_conv_second_order_matches_xla(stride):
  """The KL-through-sampler term differentiates the input gradient with respect to the kernel."""
  x = jax.random.normal(jax.random.key(0), (2, 9, 9, 3))
  kernel = jax.random.normal(jax.random.key(1), (3, 3, 3, 4))

  def outer(conv):
    def loss(k):
      g = jax.grad(lambda x_: jnp.sum(jnp.tanh(conv(x_, k, stride))))(x)
      return jnp.sum(jnp.sin(x - 0.1 * g))
    return jax.grad(loss)(kernel)

  np.testing.assert_allclose(outer(fast_conv.conv2d), outer(fast_conv.xla_conv), atol=1e-5)
