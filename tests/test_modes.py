"""Disjoint modes (jebm.eval.modes, jebm.models.vae / flow, jebm.baselines, experiments/modes.py):
the metrics on known answers, the far_unequal density, the baselines' known properties, and the
launcher end to end on tiny settings."""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jebm import baselines
from jebm.data import toy2d
from jebm.eval import modes
from jebm.models.flow import RealNVP
from jebm.models.vae import VAE

ROOT = Path(__file__).resolve().parents[1]
# Smaller than the launcher's models (faster to compile); the properties hold at any size.
SMALL_FLOW = RealNVP(num_layers=4, hidden_sizes=(32, 32))
SMALL_VAE = VAE(hidden_sizes=(64, 64))


@pytest.mark.parametrize("name", modes.DENSITIES)
def test_true_samples_cover_every_mode_with_small_distances(name):
  x, _ = toy2d.sample(name, 4000, seed=0)
  fresh, _ = toy2d.sample(name, 4000, seed=1)
  grid, _ = toy2d.sample(name, 100_000, seed=2)
  coverage = modes.mode_coverage(name, x)
  assert coverage["modes_covered"] == coverage["modes_total"] == len(modes.mode_weights(name))
  # In expectation: 1.1% (3-std discs), 4.6% (rings' 2-std annuli), 0 (checkerboard).
  assert coverage["mass_off_support"] <= (0.06 if name == "rings" else 0.02)
  np.testing.assert_allclose(coverage["mode_fractions"], modes.mode_weights(name), atol=0.02)
  assert modes.mmd(x, fresh) < 2e-3
  assert modes.kl_grid(grid, x) < 0.3
  assert modes.mmd(x, x) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("name", ["8gaussians", "far_unequal"])
def test_samples_of_one_mode_cover_one_and_are_far(name):
  x, labels = toy2d.sample(name, 8000, seed=0)
  one = x[labels == 1][:1000]
  coverage = modes.mode_coverage(name, one)
  assert coverage["modes_covered"] == 1 and coverage["mass_off_support"] < 0.02
  grid, _ = toy2d.sample(name, 100_000, seed=2)
  assert modes.kl_grid(grid, one) > 5 * modes.kl_grid(grid, x[:1000]) + 1.0
  assert modes.mmd(one, x[:1000]) > 20 * modes.mmd(x[1000:2000], x[:1000])


@pytest.mark.parametrize("name", modes.DENSITIES)
def test_uniform_noise_is_mostly_off_the_support(name):
  noise = np.random.default_rng(0).uniform(-4, 4, (4000, 2))
  assert modes.mode_coverage(name, noise)["mass_off_support"] > 0.75


def test_mode_regions_of_known_points():
  assert modes.mode_index("8gaussians", [[2.0, 0.0], [0.0, 2.1], [1.0, 1.0]]).tolist() == [0, 2, -1]
  assert modes.mode_index("far_unequal", [[-2, 2], [2.2, -2.1], [0, 0]]).tolist() == [0, 2, -1]
  # rings: ring k, sector s -> 8k + s; 0.75 lies between rings 0.5 and 1.0.
  assert modes.mode_index("rings", [[0.5, 0.01], [0.0, -1.5], [0.75, 0.0]]).tolist() == [0, 22, -1]
  # checkerboard: [-2, -1) x [-2, -1) is black, [-1, 0) x [-2, -1) is white.
  idx = modes.mode_index("checkerboard", [[-1.5, -1.5], [-0.5, -1.5], [0.5, 0.5], [3.0, 3.0]])
  assert idx[0] >= 0 and idx[1] == -1 and idx[2] >= 0 and idx[3] == -1
  x, _ = toy2d.sample("checkerboard", 4000, seed=0)
  assert set(modes.mode_index("checkerboard", x).tolist()) == set(range(8))


def test_far_unequal_density():
  a, la = toy2d.sample("far_unequal", 20000, seed=7)
  b, lb = toy2d.sample("far_unequal", 20000, seed=7)
  np.testing.assert_array_equal(a, b)
  np.testing.assert_array_equal(la, lb)
  assert a.dtype == np.float32 and a.shape == (20000, 2) and la.dtype == np.int32
  assert not np.array_equal(a, toy2d.sample("far_unequal", 20000, seed=8)[0])
  fractions = np.bincount(la, minlength=4) / len(la)
  np.testing.assert_allclose(fractions, [0.6, 0.25, 0.1, 0.05], atol=0.01)
  centres = toy2d.centers("far_unequal")
  np.testing.assert_array_equal(centres, [[-2, 2], [2, 2], [2, -2], [-2, -2]])
  for k in range(4):
    np.testing.assert_allclose(a[la == k].mean(0), centres[k], atol=0.02)
    np.testing.assert_allclose(a[la == k].std(0), 0.1, atol=0.01)


def test_existing_densities_are_unchanged():
  # Sums of the first 1000 points of seed 3, measured before far_unequal was added.
  expected = {
    "8gaussians": (-7.104589351514733, 2466.675667365027),
    "rings": (31.470486840989906, 1578.8975660156575),
    "checkerboard": (-49.379345443245256, 1994.1628025335667),
    "two_moons": (30.807192565320292, 1714.6206731113198),
  }
  for name, (total, absolute) in expected.items():
    x = toy2d.sample(name, 1000, seed=3)[0].astype(np.float64)
    assert (x.sum(), np.abs(x).sum()) == pytest.approx((total, absolute), rel=1e-9), name


@pytest.fixture(scope="module")
def flow_params():
  x, _ = toy2d.sample("8gaussians", 2000, seed=0)
  config = baselines.BaselineConfig(num_steps=150)
  return baselines.fit_flow(x, config, seed=0, model=SMALL_FLOW)


def test_realnvp_inverts_and_its_density_integrates_to_one(flow_params):
  params, losses = flow_params
  assert float(losses[-20:].mean()) < float(losses[:20].mean())
  flow = SMALL_FLOW
  x = jax.random.normal(jax.random.key(1), (256, 2)) * 2
  z, _ = flow.apply({"params": params}, x, method=RealNVP.forward)
  assert not np.allclose(z, x, atol=1e-2)  # trained: not the identity
  np.testing.assert_allclose(
    flow.apply({"params": params}, z, method=RealNVP.inverse), x, atol=1e-4
  )
  c = np.linspace(-8, 8, 401)
  gx, gy = np.meshgrid(c, c, indexing="ij")
  grid = jnp.asarray(np.stack([gx.ravel(), gy.ravel()], 1), jnp.float32)
  mass = float(jnp.sum(jnp.exp(flow.apply({"params": params}, grid))) * (c[1] - c[0]) ** 2)
  assert mass == pytest.approx(1.0, abs=0.02)


def test_vae_trains_and_its_elbo_is_below_an_importance_sampled_log_likelihood():
  x, _ = toy2d.sample("far_unequal", 512, seed=0)
  vae = SMALL_VAE
  params, losses = baselines.fit_vae(x, baselines.BaselineConfig(num_steps=120), seed=0, model=vae)
  assert float(losses[-20:].mean()) < float(losses[:20].mean()) - 0.5
  points = jnp.asarray(x[:16])
  variables = {"params": params}
  keys = jax.random.split(jax.random.key(3), 64)
  elbo = jnp.mean(jax.vmap(lambda k: vae.apply(variables, points, k))(keys), axis=0)
  # log p(x) >= log mean_k p(x, z_k) / q(z_k | x) (IWAE, K = 2048) >= ELBO in expectation.
  mean, logvar = vae.apply(variables, points, method=VAE.encode)
  std = jnp.exp(0.5 * logvar)
  z = mean + std * jax.random.normal(jax.random.key(4), (2048, *mean.shape))
  log_q = jnp.sum(jax.scipy.stats.norm.logpdf(z, mean, std), -1)
  log_prior = jnp.sum(jax.scipy.stats.norm.logpdf(z), -1)
  decoded = jax.vmap(lambda zk: vae.apply(variables, zk, method=VAE.decode))(z)
  sigma = jnp.exp(params["log_sigma"])
  log_lik = jnp.sum(jax.scipy.stats.norm.logpdf(points, decoded, sigma), -1)
  iwae = jax.nn.logsumexp(log_lik + log_prior - log_q, axis=0) - jnp.log(2048.0)
  # Monte Carlo estimates of both: compared on their means over the 16 points.
  assert float(jnp.mean(elbo)) <= float(jnp.mean(iwae)) + 0.02


def test_parameter_counts_are_within_2x():
  key, x = jax.random.key(0), jnp.zeros((1, 2))
  vae = baselines.param_count(VAE().init(key, x, key))
  flow = baselines.param_count(RealNVP().init(key, x))
  assert (vae, flow) == (34568, 35352)  # the EBM's MLP (128, 128, 128): 33537
  assert max(vae, flow, 33537) <= 2 * min(vae, flow, 33537)


def _launch(workdir, *args):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  command = [sys.executable, "-m", "experiments.modes", f"--workdir={workdir}", *args]
  return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)


def test_launcher_writes_the_stable_json_the_table_and_the_png(tmp_path):
  tiny = ["--densities=far_unequal", "--ebm_steps=10", "--baseline_steps=20"]
  tiny += ["--ebm_sample_steps=10", "--num_samples=200", "--train_size=500"]
  result = _launch(tmp_path / "w", *tiny)
  assert result.returncode == 0, result.stderr[-3000:]
  report = json.loads((tmp_path / "w" / "modes.json").read_text())
  assert list(report) == ["far_unequal"] and set(report["far_unequal"]) == {"ebm", "vae", "flow"}
  for model, r in report["far_unequal"].items():
    for key in ("modes_covered", "modes_total", "mass_off_support", "mmd", "kl_grid"):
      assert np.isfinite(r[key]), (model, key)
    assert r["modes_total"] == 4 and 0 <= r["modes_covered"] <= 4
    assert 0 <= r["mass_off_support"] <= 1 and r["mmd"] >= 0 and r["kl_grid"] >= 0
  settings = json.loads((tmp_path / "w" / "settings.json").read_text())
  assert settings["ebm"]["num_steps"] == 10 and settings["num_samples"] == 200
  assert (tmp_path / "w" / "modes.png").stat().st_size > 0
  assert "| far_unequal | ebm |" in (tmp_path / "w" / "modes.md").read_text()


def test_launcher_bad_flag_is_one_line_naming_it(tmp_path):
  bad = _launch(tmp_path / "w", "--densities=8gaussians,two_moons")
  assert bad.returncode != 0 and "Traceback" not in bad.stderr
  assert "--densities: unknown ['two_moons']" in bad.stderr.strip().splitlines()[-1]
  assert not (tmp_path / "w").exists()
