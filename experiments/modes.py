"""Disjoint modes: jebm's EBM against two generator baselines of similar size (a Gaussian VAE and
a RealNVP flow) on 2-D densities with separated modes (``jebm.eval.modes``).

    python -m experiments.modes --workdir=W [--densities=8gaussians,rings,checkerboard,far_unequal]

writes ``W/modes.json`` (``{density: {model: {"modes_covered", "modes_total",
"mass_off_support", "mmd", "kl_grid", ...}}}`` for models ebm, vae, flow), ``W/settings.json``,
``W/modes.md`` (the table) and ``W/modes.png`` (rows = densities; columns = truth, ebm, vae,
flow as 2-D histograms of the samples).

The EBM is the ``toy2d`` preset (MLP energy, contrastive divergence with 20-step Langevin chains
and a replay buffer) trained by ``jebm.train.make_train_step``; its samples are Langevin chains
from uniform noise on [-3, 3]^2 of --ebm_sample_steps steps with the preset's sampler. The
baselines are fitted by maximum likelihood (``jebm.baselines``). Every model sees the same
--train_size points of the density.
"""

import dataclasses
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags, logging

from experiments import flags as launcher_flags
from experiments.configs.presets import PRESETS
from jebm import baselines, files
from jebm import config as config_lib
from jebm import generate, train
from jebm.data import toy2d
from jebm.eval import modes
from jebm.models.flow import RealNVP
from jebm.models.vae import VAE

MODELS = ("ebm", "vae", "flow")

flags.DEFINE_list("densities", list(modes.DENSITIES), f"Densities, from {list(modes.DENSITIES)}.")
flags.DEFINE_integer("seed", 0, "Seed of the data, the models and the samplers.", lower_bound=0)
flags.DEFINE_integer("ebm_steps", 2000, "Training steps of the EBM.", lower_bound=1)
flags.DEFINE_integer(
  "baseline_steps", 4000, "Training steps of the VAE and the flow.", lower_bound=1
)
flags.DEFINE_integer(
  "ebm_sample_steps", 1000, "Langevin steps of the EBM's chains from noise.", lower_bound=1
)
flags.DEFINE_integer(
  "num_samples", 2000, "Samples per model and density for the metrics.", lower_bound=10
)
flags.DEFINE_integer(
  "train_size", 20000, "Training points per density (shared by the models).", lower_bound=256
)
FLAGS = flags.FLAGS
TRUE_GRID_SAMPLES = 200_000  # true samples behind the KL grid's reference histogram


def check_flags() -> None:
  """UsageError naming the flag for a bad value."""
  launcher_flags.check_path_flags()
  launcher_flags.check_nonempty_lists(("densities",))
  unknown = sorted(set(FLAGS.densities) - set(modes.DENSITIES))
  if unknown or not FLAGS.densities:
    raise app.UsageError(f"--densities: unknown {unknown}; known: {list(modes.DENSITIES)}")
  if len(set(FLAGS.densities)) != len(FLAGS.densities):
    raise app.UsageError(f"--densities: repeated names in {FLAGS.densities}")
  if FLAGS.seed > 2**31 - 1:
    raise app.UsageError(f"--seed must be an int in [0, {2**31 - 1}], got {FLAGS.seed}")


def ebm_config(seed: int, num_steps: int) -> config_lib.Config:
  """The ``toy2d`` preset for 2-D points (its dataset field only names the preset's data: the
  launcher feeds each density's points itself)."""
  return dataclasses.replace(PRESETS["toy2d"], example_shape=(2,), seed=seed, num_steps=num_steps)


def train_ebm(data: np.ndarray, config: config_lib.Config):
  """Trains the EBM of ``config`` on points ``data`` [N, 2] with jebm's CD step, all steps in one
  ``lax.scan`` over random minibatches; returns (state, metrics of every step)."""
  model = config_lib.build_model(config)
  step = train.make_train_step(
    model, config_lib.build_optimizer(config), config_lib.train_config(config)
  )
  data = jnp.asarray(data, jnp.float32)
  idx = jax.random.randint(
    jax.random.key(config.seed + 1), (config.num_steps, config.batch_size), 0, data.shape[0]
  )

  def body(state, i):
    return step(state, {"image": data[i], "label": jnp.zeros(i.shape, jnp.int32)})

  state, metrics = jax.jit(lambda s: jax.lax.scan(body, s, idx))(config_lib.create_state(config))
  return state, metrics


def ebm_samples(state, config, num: int, num_steps: int, seed: int) -> np.ndarray:
  """[num, 2] Langevin samples of the EBM from uniform noise (``jebm.generate``)."""
  x, _ = generate.generate_batched(
    jax.random.key(seed), state, config, num=num, num_steps=num_steps, batch_size=num
  )
  return np.asarray(x)


def replay_samples(state, config, num: int, seed: int) -> np.ndarray:
  """[num, 2] entries of the EBM's replay buffer (its persistent chains), as they are."""
  x, _ = generate.chain_starts(jax.random.key(seed), state, config, num, init="replay")
  return np.asarray(x)


def ebm_grid_kl(state, config, true_cells) -> float:
  """KL(true || exp(-E) normalised over the KL grid), from the energy itself."""
  energies = generate.energy_fn(state, config)(jnp.asarray(modes.grid_centers()), None)
  return modes.kl_cells(true_cells, modes.density_on_grid(-np.asarray(energies)))


def flow_grid_kl(params, true_cells) -> float:
  """KL(true || the flow's density normalised over the KL grid)."""
  log_p = RealNVP().apply({"params": params}, jnp.asarray(modes.grid_centers()))
  return modes.kl_cells(true_cells, modes.density_on_grid(np.asarray(log_p)))


def score(name: str, samples: np.ndarray, fresh: np.ndarray, true_grid: np.ndarray) -> dict:
  """The STABLE metrics of samples [n, 2] of density ``name``."""
  coverage = modes.mode_coverage(name, samples)
  return {
    "modes_covered": coverage["modes_covered"],
    "modes_total": coverage["modes_total"],
    "mass_off_support": coverage["mass_off_support"],
    "mmd": modes.mmd(samples, fresh),
    "kl_grid": modes.kl_grid(true_grid, samples),
    "mode_fractions": coverage["mode_fractions"],
  }


def run_density(name: str) -> tuple:
  """Trains and scores the three models on one density; returns (results, samples)."""
  seed = FLAGS.seed
  data, _ = toy2d.sample(name, FLAGS.train_size, seed)
  fresh, _ = toy2d.sample(name, FLAGS.num_samples, seed + 1)
  true_grid, _ = toy2d.sample(name, TRUE_GRID_SAMPLES, seed + 2)
  true_cells = modes.grid_histogram(true_grid)
  results, samples = {}, {"truth": fresh}

  t0 = time.time()
  config = ebm_config(seed, FLAGS.ebm_steps)
  state, _ = train_ebm(data, config)
  samples["ebm"] = ebm_samples(state, config, FLAGS.num_samples, FLAGS.ebm_sample_steps, seed)
  results["ebm"] = score(name, samples["ebm"], fresh, true_grid)
  replay = score(name, replay_samples(state, config, FLAGS.num_samples, seed), fresh, true_grid)
  results["ebm"].update(
    kl_grid_density=ebm_grid_kl(state, config, true_cells),
    replay_buffer={k: v for k, v in replay.items() if k != "mode_fractions"},
    params=baselines.param_count(state.params),
    seconds=round(time.time() - t0, 1),
  )

  base = baselines.BaselineConfig(num_steps=FLAGS.baseline_steps)
  for model_name, fit, model in (
    ("vae", baselines.fit_vae, VAE()),
    ("flow", baselines.fit_flow, RealNVP()),
  ):
    t0 = time.time()
    params, losses = fit(data, base, seed)
    x = model.apply(
      {"params": params}, jax.random.key(seed + 3), FLAGS.num_samples, method=type(model).sample
    )
    samples[model_name] = np.asarray(x)
    results[model_name] = score(name, samples[model_name], fresh, true_grid)
    if model_name == "flow":
      results[model_name]["kl_grid_density"] = flow_grid_kl(params, true_cells)
    results[model_name].update(
      final_loss=float(losses[-1]),
      params=baselines.param_count(params),
      seconds=round(time.time() - t0, 1),
    )
  reference = score(name, toy2d.sample(name, FLAGS.num_samples, seed + 4)[0], fresh, true_grid)
  return results, samples, reference


def markdown_table(results: dict, references: dict) -> str:
  """The table of modes.md: one row per density and model (plus true samples as a reference)."""
  lines = [
    "| density | model | modes covered | mass off support | MMD^2 | KL grid (samples) | "
    "KL grid (density) | params |",
    "| --- | --- | --- | --- | --- | --- | --- | --- |",
  ]
  for density, per_model in results.items():
    rows = {**per_model, "(true samples)": references[density]}
    for model, r in rows.items():
      kl_density = f"{r['kl_grid_density']:.3f}" if "kl_grid_density" in r else ""
      lines.append(
        f"| {density} | {model} | {r['modes_covered']}/{r['modes_total']} | "
        f"{r['mass_off_support']:.3f} | {r['mmd']:.4f} | {r['kl_grid']:.3f} | {kl_density} | "
        f"{r.get('params', '')} |"
      )
  return "\n".join(lines) + "\n"


def save_figure(path: str, all_samples: dict) -> str:
  """rows = densities, columns = truth | ebm | vae | flow: 2-D histograms on the KL grid's box."""
  from matplotlib.figure import Figure

  columns = ("truth",) + MODELS
  fig = Figure(figsize=(2.2 * len(columns), 2.2 * len(all_samples)), dpi=100)
  low, high = modes.GRID_BOX
  for r, (density, samples) in enumerate(all_samples.items()):
    for c, column in enumerate(columns):
      ax = fig.add_subplot(len(all_samples), len(columns), r * len(columns) + c + 1)
      x = np.clip(samples[column], low, high)
      ax.hist2d(x[:, 0], x[:, 1], bins=80, range=[[low, high], [low, high]], cmap="viridis")
      ax.set_xticks([])
      ax.set_yticks([])
      if r == 0:
        ax.set_title(column)
      if c == 0:
        ax.set_ylabel(density)
  fig.tight_layout()
  return files.write_atomically(path, lambda tmp: fig.savefig(tmp, format="png"))


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  check_flags()
  launcher_flags.quiet_library_logs()
  results, references, all_samples = {}, {}, {}
  for name in FLAGS.densities:
    results[name], all_samples[name], references[name] = run_density(name)
    logging.info(
      "%s: %s", name, json.dumps({m: r["modes_covered"] for m, r in results[name].items()})
    )
  settings = {
    "densities": list(FLAGS.densities),
    "seed": FLAGS.seed,
    "train_size": FLAGS.train_size,
    "num_samples": FLAGS.num_samples,
    "ebm": {
      **config_lib.config_to_dict(ebm_config(FLAGS.seed, FLAGS.ebm_steps)),
      "sampler": f"Langevin from uniform noise on [-3, 3]^2, {FLAGS.ebm_sample_steps} steps "
      "(modes.json ebm.replay_buffer: replay-buffer entries as they are)",
    },
    "baselines": {
      **dataclasses.asdict(baselines.BaselineConfig(num_steps=FLAGS.baseline_steps)),
      "vae": {"hidden_sizes": list(VAE.hidden_sizes), "latent_dim": VAE.latent_dim},
      "flow": {"num_layers": RealNVP.num_layers, "hidden_sizes": list(RealNVP.hidden_sizes)},
    },
    "metrics": {
      "cover_fraction": modes.COVER_FRACTION,
      "mode_radius": modes.MODE_RADIUS,
      "ring_half_width": modes.RING_HALF_WIDTH,
      "ring_sectors": modes.RING_SECTORS,
      "mmd": f"biased squared MMD, RBF std {modes.MMD_BANDWIDTH}, against {FLAGS.num_samples} "
      "fresh true samples",
      "kl_grid": f"KL(true || model) on a {modes.GRID_BINS}^2 grid over {list(modes.GRID_BOX)}^2, "
      f"{TRUE_GRID_SAMPLES} true samples, cell probabilities + {modes.GRID_FLOOR} renormalised",
    },
    "reference_true_samples": references,
  }
  os.makedirs(FLAGS.workdir, exist_ok=True)
  files.write_text(os.path.join(FLAGS.workdir, "modes.json"), json.dumps(results, indent=2))
  files.write_text(os.path.join(FLAGS.workdir, "settings.json"), json.dumps(settings, indent=2))
  files.write_text(os.path.join(FLAGS.workdir, "modes.md"), markdown_table(results, references))
  save_figure(os.path.join(FLAGS.workdir, "modes.png"), all_samples)
  print(markdown_table(results, references))


if __name__ == "__main__":
  app.run(main)
