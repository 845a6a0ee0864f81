"""Smoke test of the benchmark script's quick mode (jebm side only; not a speed test)."""

import json

import jax
import numpy as np
import pytest

from benchmarks import jebm_impl, run, swap_conv, workloads
from jebm import ops
from jebm.models import ConvEnergy

RESULT_KEYS = {
  "impl",
  "workload",
  "precision",
  "compile_s",
  "warmup_s",
  "reps",
  "median_s",
  "steps_per_s",
  "best_steps_per_s",
  "ratio_to_jebm",
  "ratio_to_jebm_best",
  "fraction_of_f32_limit",
  "fraction_of_f32_limit_best",
}


def test_quick_mode_writes_well_formed_json(tmp_path, capsys):
  out = tmp_path / "results.json"
  workloads, impls = "mnist_sample,mlp2d_sample,mnist_train", "jebm,jebm -flags -convgrad"
  assert (
    run.main(
      [
        "--quick",
        "--no-bf16",
        "--reps",
        "2",
        "--workloads",
        workloads,
        "--impls",
        impls,
        "--out",
        str(out),
      ]
    )
    == 0
  )
  data = json.loads(out.read_text())
  assert {"environment", "settings", "peak_flops", "flops", "results", "targets"} <= set(data)
  assert data["peak_flops"]["jax_matmul_f32"] > 0 and data["peak_flops"]["jax_matmul_f32_best"] > 0
  assert all({"target", "impl", "stat", "value", "goal", "met"} <= set(t) for t in data["targets"])
  assert set(data["flops"]) == set(workloads.split(","))
  assert all(v["xla"] > 0 and v["analytic"] > 0 for v in data["flops"].values())
  rows = {(r["workload"], r["impl"]): r for r in data["results"]}
  plain = "jebm -flags -convgrad"
  expected = {
    ("mnist_sample", "jebm"),
    ("mnist_sample", plain),
    ("mlp2d_sample", "jebm"),
    ("mnist_train", "jebm"),
    ("mnist_train", plain),
    ("matmul", "jax matmul"),
  }
  assert expected == set(rows)
  for key in expected - {("matmul", "jax matmul")}:
    row = rows[key]
    assert RESULT_KEYS <= set(row) and "error" not in row, row
    assert row["reps"] == 2 and row["steps_per_s"] > 0 and row["compile_s"] > 0
  assert rows[("mnist_sample", "jebm")]["ratio_to_jebm"] == pytest.approx(1.0)
  assert "mnist_sample" in capsys.readouterr().out


def test_swapped_conv_energy_matches_conv_energy():
  """The levers' network with a swappable convolution computes jebm's ConvEnergy."""
  model = ConvEnergy(features=(8, 16))
  x = jax.random.uniform(jax.random.key(0), (3, 12, 12, 1))
  variables = model.init(jax.random.key(1), x)
  swapped = lambda v, x_: swap_conv.conv_energy_apply(model, v, x_, conv=ops.conv2d)
  np.testing.assert_allclose(swapped(variables, x), model.apply(variables, x), atol=1e-6)
  grad = lambda apply: jax.jit(jax.grad(lambda x_: apply(variables, x_).sum()))(x)
  np.testing.assert_allclose(grad(swapped), grad(model.apply), atol=1e-6)


def test_width_sweep_workloads_and_unknown_names(capsys):
  by_name = {w.name: w for w in workloads.all_workloads()}
  for width in workloads.MLP_SWEEP_WIDTHS:
    sweep = by_name[f"mlp2d_w{width}_sample"]
    assert sweep.model().hidden_sizes == (width,) * len(workloads.MLP_HIDDEN)
    assert sweep.spec()["hidden"] == [width] * len(workloads.MLP_HIDDEN)
    assert (sweep.batch, sweep.num_steps) == (by_name["mlp2d_sample"].batch, 100)
  quick = {w.name: w for w in workloads.all_workloads(quick=True)}
  narrow, wide = quick["mlp2d_w16_sample"], quick["mlp2d_sample"]
  variables = {w.name: jebm_impl.init_variables(w) for w in (narrow, wide)}
  flops = run.flop_counts([narrow, wide], variables)
  assert flops[narrow.name]["xla"] < flops[wide.name]["xla"] / 10  # each network counted
  with pytest.raises(SystemExit):
    run.parse_args(["--workloads", "mnist_sample,no_such_workload"])
  assert "unknown workload(s) ['no_such_workload']" in capsys.readouterr().err
