"""Trajectory EBM against a feed-forward and a recurrent baseline on a MuJoCo simulator.

    pip install -e ".[mujoco]"
    python -m experiments.trajectories --env=reacher|pusher --workdir=W [--use_actions=false]

Trains on ``jebm.data`` ``trajectories/<env>`` (simulated on first use; see
``jebm.data.trajectories``), the three models of ``jebm.dynamics`` on the same windows, then rolls
each out for 100 steps from the true first --context states of every test trajectory, feeding
its own predictions back. Writes to W:
  trajectories.json   {model: {"horizon_errors": {"1": .., "10": .., "50": .., "100": ..},
                       "horizon_errors_std": {..}, "plausibility": {..}, "params": n,
                       "train_seconds": s}} for models "ebm", "mlp", "rnn" (the GRU), and
                       "settings"
  trajectories.md     the table
  trajectories_errors.png   error against horizon (mean; shaded: the middle half of the test
                            trajectories)
  trajectories_rollout.png  one test rollout of each model next to the truth, entry by entry
Errors are root-mean-square over the state's entries standardised by the training data's stds.
"""

import dataclasses
import json
import os
import time

import jax
import numpy as np
from absl import app, flags, logging

from experiments import flags as launcher_flags
from jebm import dynamics, files
from jebm.data import trajectories as sim
from jebm.data.builders.trajectories import LENGTH, SPLITS
from jebm.eval import trajectories as traj

MODELS = ("ebm", "mlp", "rnn")
HORIZON = max(traj.HORIZONS)

flags.DEFINE_enum("env", "reacher", sorted(sim.ENVS), "The simulated environment.")
flags.DEFINE_integer("seed", 0, "Seed of the models and the EBM's chains.", lower_bound=0)
flags.DEFINE_integer("context", 4, "States each prediction of the EBM and MLP sees.", lower_bound=1)
flags.DEFINE_bool("use_actions", True, "Condition every model on the action taken.")
flags.DEFINE_integer("num_steps", 4000, "Training steps of every model.", lower_bound=1)
flags.DEFINE_integer("num_train", 1000, "Training trajectories used (of 1000).", lower_bound=1)
flags.DEFINE_integer("num_test", 100, "Test trajectories rolled out (of 100).", lower_bound=1)
flags.DEFINE_integer("predict_chains", 8, "The EBM's chains per prediction.", lower_bound=1)
flags.DEFINE_integer("predict_steps", 100, "Langevin steps per EBM prediction.", lower_bound=0)
FLAGS = flags.FLAGS


def check_flags() -> None:
  """UsageError naming the flag for a bad value (before the simulator is loaded)."""
  launcher_flags.check_path_flags()
  most = LENGTH + 1 - HORIZON
  if FLAGS.context > most:
    raise app.UsageError(
      f"--context must be <= {most} (a {HORIZON}-step rollout follows the context in"
      f" trajectories of {LENGTH + 1} states), got {FLAGS.context}"
    )
  for name, split in (("num_train", "train"), ("num_test", "test")):
    most = SPLITS[split][0]
    if getattr(FLAGS, name) > most:
      raise app.UsageError(f"--{name} must be <= {most}, got {getattr(FLAGS, name)}")
  if FLAGS.seed > 2**31 - 1:
    raise app.UsageError(f"--seed must be an int in [0, {2**31 - 1}], got {FLAGS.seed}")


def read_split(split: str, num: int):
  """(states [num, LENGTH + 1, S], actions [num, LENGTH, A]) of the environment's split."""
  from jebm import data  # TFDS is imported only when data is needed.

  records = data.source_to_arrays(
    data.load(f"trajectories/{FLAGS.env}", split, data_dir=FLAGS.data_dir), ("states", "actions")
  )
  return records["states"][:num], records["actions"][:num]


def settings() -> dynamics.DynamicsConfig:
  return dynamics.DynamicsConfig(
    context=FLAGS.context,
    use_actions=FLAGS.use_actions,
    num_steps=FLAGS.num_steps,
    predict_chains=FLAGS.predict_chains,
    predict_steps=FLAGS.predict_steps,
  )


def train_models(states, actions, stats, config):
  """{model: (Trained, seconds)} for the three models; the baselines' widths are chosen to have
  about as many parameters as the EBM."""
  cond, target = traj.windows(states, actions, config.context, stats, config.use_actions)
  trained = {}
  size = lambda: dynamics.param_count(trained["ebm"][0])
  for name, fit in (
    ("ebm", lambda: dynamics.train_ebm(cond, target, config, FLAGS.seed)),
    ("mlp", lambda: dynamics.train_mlp(cond, target, config, FLAGS.seed, size())),
    ("rnn", lambda: dynamics.train_gru(states, actions, stats, config, FLAGS.seed, size())),
  ):
    start = time.time()
    model = fit()
    jax.block_until_ready(model.losses)
    trained[name] = (model, time.time() - start)
    logging.info("%s trained in %.0f s, final loss %.4f", name, trained[name][1], model.losses[-1])
  return trained


def rollouts(trained, states, actions, stats, config) -> dict:
  """{model: predicted states [B, HORIZON, S]} from the true first ``context`` states."""
  k = config.context
  window, future_actions = states[:, :k], actions[:, k - 1 : k - 1 + HORIZON]
  gru_carry, gru_step = dynamics.gru_rollout_fn(trained["rnn"][0], stats, config, states, actions)
  steps = {
    "ebm": (None, dynamics.ebm_rollout_fn(trained["ebm"][0], stats, config)),
    "mlp": (None, dynamics.mlp_rollout_fn(trained["mlp"][0], stats, config)),
    "rnn": (gru_carry, gru_step),
  }
  key = jax.random.key(FLAGS.seed + 1)
  run = lambda carry, step: traj.rollout(step, carry, window, future_actions, key)
  return {name: np.asarray(jax.jit(run, static_argnums=1)(*steps[name])) for name in MODELS}


def markdown(results: dict) -> str:
  """The table of trajectories.md."""
  head = " | ".join(f"h={h}" for h in traj.HORIZONS)
  lines = [
    f"| model | {head} | in joint limits | in training range | kinetic ratio | params |",
    "| --- " * (len(traj.HORIZONS) + 5) + "|",
  ]
  for name in MODELS:
    r = results[name]
    errors = " | ".join(
      f"{r['horizon_errors'][str(h)]:.3f} ± {r['horizon_errors_std'][str(h)]:.3f}"
      for h in traj.HORIZONS
    )
    p = r["plausibility"]
    lines.append(
      f"| {name} | {errors} | {p['in_joint_limits']:.3f} | {p['in_training_range']:.3f} | "
      f"{p['kinetic_ratio']:.2f} | {r['params']} |"
    )
  return "\n".join(lines) + "\n"


def save_figures(workdir: str, errors: dict, predicted: dict, truth: np.ndarray) -> None:
  """trajectories_errors.png and trajectories_rollout.png."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, ax = plt.subplots(figsize=(6, 4))
  steps = np.arange(1, HORIZON + 1)
  for name in MODELS:
    low, high = np.percentile(errors[name], [25, 75], axis=0)
    ax.plot(steps, errors[name].mean(0), label=name)
    ax.fill_between(steps, low, high, alpha=0.2)
  ax.set(xlabel="horizon (steps)", ylabel="standardised RMSE", yscale="log", title=FLAGS.env)
  ax.legend()
  fig.tight_layout()
  fig.savefig(os.path.join(workdir, "trajectories_errors.png"), dpi=120)
  plt.close(fig)

  entries = np.argsort(-truth[0].std(0))[:4]  # the four entries that move most
  fig, axes = plt.subplots(1, len(entries), figsize=(4 * len(entries), 3), squeeze=False)
  for ax, e in zip(axes[0], entries):
    ax.plot(truth[0, :, e], "k", lw=2, label="truth")
    for name in MODELS:
      ax.plot(predicted[name][0, :, e], label=name)
    nq = truth.shape[-1] // 2  # a state is (qpos, qvel); both environments have nq == nv
    name = f"qpos[{e}]" if e < nq else f"qvel[{e - nq}]"
    ax.set(title=f"{name} (state entry {e})", xlabel="step")
  axes[0, 0].legend()
  fig.tight_layout()
  fig.savefig(os.path.join(workdir, "trajectories_rollout.png"), dpi=120)
  plt.close(fig)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  check_flags()
  try:
    sim.require_mujoco()
  except ImportError as e:
    raise app.UsageError(str(e)) from None
  os.makedirs(FLAGS.workdir, exist_ok=True)
  config = settings()
  train_states, train_actions = read_split("train", FLAGS.num_train)
  test_states, test_actions = read_split("test", FLAGS.num_test)
  stats = traj.fit_stats(train_states, train_actions)
  trained = train_models(train_states, train_actions, stats, config)
  predicted = rollouts(trained, test_states, test_actions, stats, config)
  k = config.context
  truth = test_states[:, k : k + HORIZON]
  limits = sim.joint_limits(FLAGS.env)
  results, errors = {}, {}
  for name in MODELS:
    model, seconds = trained[name]
    errors[name] = traj.rollout_errors(predicted[name], truth, stats)
    results[name] = {
      **traj.summarize_errors(errors[name]),
      "plausibility": traj.plausibility(predicted[name], limits, stats),
      "params": dynamics.param_count(model),
      "train_seconds": round(seconds, 1),
    }
  results["truth"] = {"plausibility": traj.plausibility(truth, limits, stats)}
  results["settings"] = dict(
    env=FLAGS.env,
    seed=FLAGS.seed,
    num_train=len(train_states),
    num_test=len(test_states),
    **dataclasses.asdict(config),
  )
  files.write_text(
    os.path.join(FLAGS.workdir, "trajectories.json"), json.dumps(results, indent=2) + "\n"
  )
  table = markdown(results)
  files.write_text(os.path.join(FLAGS.workdir, "trajectories.md"), table)
  save_figures(FLAGS.workdir, errors, predicted, truth)
  print(table)


if __name__ == "__main__":
  app.run(main)
