r"""Evaluates a checkpoint: ``python -m experiments.evaluate --workdir=W`` writes W/eval/report.json.

Tasks (``--tasks``, comma-separated; default: every task that applies to the model), each a module
of ``jebm/eval`` (``jebm.eval.TASKS``):
  sample_quality  samples (the replay buffer's chains run on, and per-class chains from noise)
                  scored by a judge classifier trained on the dataset's real training split:
                  accuracy on the conditioned label, FID and KID on judge features (or on a user
                  feature network, --feature_fn=module:function)
  classify        argmin_y E(x, y) as a classifier on the test split: accuracy, calibration
                  (ECE of softmax(-E(x, .))), confusion matrix (conditional models only)
  histograms      energies of train vs test data (PNG + summary)
  ood             AUROC of the energy's OOD scores against --ood_sets
  robustness      (only when named) accuracy of argmin_y E(x, y) under PGD (L-inf and L2), with
                  and without Langevin purification, under transfer, BPDA + EOT and full-backprop
                  attacks, against a softmax classifier of the same network (--softmax_workdir,
                  trained first when it holds no checkpoint); settings: the flags below
  restore         (only when named) denoising (salt-and-pepper, Gaussian) and inpainting (bottom
                  half, random box) by Langevin on E(x, y), with the true and an unknown label,
                  MSE on train and test images against median-filter / mean-fill baselines;
                  cross-class mapping scored by the judge; nearest training images of samples;
                  settings: the --restore_* flags
  steps           (only when named) adaptive computation: judge accuracy, FID/KID, diversity and
                  energy of chains from noise and replay against their length, and
                  sample_adaptive against fixed chains of its mean length; the --steps_* flags
  likelihood      (only when named) AIS estimates of log Z (forward lower bound; reverse chains
                  from test data) and the test log-likelihood in nats and bits/dim, against the
                  number of temperatures; the --likelihood_* flags
The report keeps the results of tasks not run this time if they are of the same checkpoint step.
"""

import dataclasses
import json
import os
import time

from absl import app, flags, logging

from experiments import flags as launcher_flags
from experiments.configs import softmax_baseline
from experiments.trainer import train_and_evaluate
from jebm import checkpoint, files, generate
from jebm.eval import SYNTHETIC_SETS, TASKS, EvalContext, LikelihoodConfig, RestoreConfig
from jebm.eval import RobustnessConfig, StepsConfig
from jebm.eval import check_ood_spec, check_tasks, default_tasks

flags.DEFINE_list(
  "tasks", None, f"Tasks to run, from {sorted(TASKS)} (default: all that apply to the model)."
)
flags.DEFINE_integer(
  "num_samples", None, "Generated samples (default: the config's eval_num_samples).", lower_bound=1
)
flags.DEFINE_integer(
  "steps", None, "Langevin steps from noise (default: eval_langevin_steps).", lower_bound=1
)
flags.DEFINE_list(
  "init",
  ["replay", "noise"],
  "Chain starts for sample quality: 'replay' runs the replay buffer's chains on "
  "(under their own labels), 'noise' starts per-class chains from uniform noise.",
)
flags.DEFINE_integer(
  "max_test",
  None,
  "Test examples used by classify/histograms/ood (default: the whole split).",
  lower_bound=1,
)
flags.DEFINE_list(
  "ood_sets",
  list(SYNTHETIC_SETS),
  "OOD sets for --tasks=ood: uniform, gaussian, constant, inverted, interp, npz:PATH (an .npz "
  "with 'images' uint8 NHWC), tfds:NAME (the test split of a prepared dataset).",
)
flags.DEFINE_string(
  "feature_fn", None, "module:function giving features of float images, for FID/KID."
)
flags.DEFINE_integer(
  "checkpoint_step", None, "Checkpoint to evaluate (default: the newest).", lower_bound=0
)
flags.DEFINE_string(
  "softmax_workdir",
  None,
  "Workdir of the robustness task's softmax baseline (default: <workdir>/softmax_baseline); "
  "trained there, with the EBM's network and data, when it holds no checkpoint.",
)
ROBUSTNESS_HELP = {
  "attack_norms": "Attack norms of --tasks=robustness: linf, l2.",
  "linf_epsilons": "L-inf radii of the robustness curves.",
  "l2_epsilons": "L2 radii of the robustness curves.",
  "num_attack_images": "Test images of the softmax, ebm and transfer curves.",
  "num_adaptive_images": "Test images of the adaptive (BPDA + EOT, backprop) curves.",
  "attack_steps": "PGD steps of the softmax and ebm curves (step size 2.5 * epsilon / steps).",
  "adaptive_attack_steps": "PGD steps of the adaptive curves (BPDA + EOT, backprop).",
  "attack_restarts": "PGD random restarts; accuracy is the worst case over them.",
  "attack_loss": "PGD loss: ce (cross-entropy) or margin.",
  "purify_steps": "Langevin steps of the purification defence, per label.",
  "purify_delta": "The defence keeps each image within +-purify_delta of its input.",
  "purify_chains": "Purifications the defence averages (its EOT).",
  "eot_samples": "Draws of the defence's noise averaged per adaptive attack gradient.",
  "sanity_steps": "Short and long PGD step counts of the more-steps sanity check.",
  "attack_batch_size": "Images per compiled attack call.",
}
for _field in dataclasses.fields(RobustnessConfig):
  _default, _help = _field.default, ROBUSTNESS_HELP[_field.name] + " (robustness task)"
  if isinstance(_default, tuple):
    flags.DEFINE_list(_field.name, [str(v) for v in _default], _help)
  elif isinstance(_default, int):
    flags.DEFINE_integer(_field.name, _default, _help)
  elif isinstance(_default, float):
    flags.DEFINE_float(_field.name, _default, _help)
  else:
    flags.DEFINE_string(_field.name, _default, _help)
RESTORE_HELP = {
  "corruptions": "Corruptions: salt_pepper, gaussian, inpaint_bottom, inpaint_box.",
  "num_images": "Train and test images restored per corruption (each), test images mapped "
  "across classes.",
  "unknown_label_images": "Test images also restored under every label (0 = skip).",
  "noise_passes": "Sampler passes (of the model's langevin_steps) for salt_pepper, gaussian.",
  "inpaint_passes": "Sampler passes for inpaint_bottom, inpaint_box.",
  "crossclass_passes": "Sampler passes of the cross-class mapping.",
  "gaussian_sigma": "Standard deviation of the gaussian corruption.",
  "nn_samples_per_class": "Samples per class from noise for the nearest-neighbour check.",
}
STEPS_HELP = {
  "lengths": "Chain lengths at which samples are scored.",
  "num_samples": "Chains per start kind (replay, noise).",
  "adaptive_tol": "sample_adaptive's energy-change threshold.",
  "adaptive_window": "Steps over which sample_adaptive measures the energy change.",
}
LIKELIHOOD_HELP = {
  "temperatures": "AIS path lengths (numbers of temperatures, >= 2, increasing); the last is "
  "reported, all give the gap curve.",
  "chains": "Forward (and reverse) AIS chains, per class for a conditional model.",
  "leapfrog_steps": "Leapfrog steps per HMC transition.",
  "base": "AIS base: uniform (on the data box) or gaussian (per-pixel moments of training data).",
  "num_images": "Test examples whose mean log-likelihood is reported.",
  "inverse_temperature": "The model is p(x) ∝ exp(-inverse_temperature * E(x)).",
}
# Settings of the tasks that have their own: (task, settings class, help per field); the flags
# are --<task>_<field>.
TASK_SETTINGS = (
  ("restore", RestoreConfig, RESTORE_HELP),
  ("steps", StepsConfig, STEPS_HELP),
  ("likelihood", LikelihoodConfig, LIKELIHOOD_HELP),
)
for _task, _cls, _helps in TASK_SETTINGS:
  for _field in dataclasses.fields(_cls):
    _name, _default = f"{_task}_{_field.name}", _field.default
    _help = f"{_helps[_field.name]} ({_task} task)"
    if isinstance(_default, tuple):
      flags.DEFINE_list(_name, [str(v) for v in _default], _help)
    elif isinstance(_default, int):
      flags.DEFINE_integer(_name, _default, _help)
    elif isinstance(_default, float):
      flags.DEFINE_float(_name, _default, _help)
    else:
      flags.DEFINE_string(_name, _default, _help)
flags.DEFINE_integer(
  "ensemble",
  1,
  "Chains of sample_quality cycle through the energies of the newest N checkpoints up to "
  "--checkpoint_step (the paper's historical ensemble; 1 = that checkpoint alone).",
  lower_bound=1,
)
flags.DEFINE_bool(
  "ema_params",
  True,
  "Evaluate the run's parameter average when it kept one (Config.ema_decay > 0); false = the "
  "current parameters.",
)
flags.DEFINE_integer("seed", 0, "Evaluation seed.", lower_bound=0, upper_bound=2**63 - 1)
FLAGS = flags.FLAGS


def check_flags():
  """Flag errors found before the checkpoint is read (UsageError names the flag; the integer
  flags' bounds are checked when they are parsed); returns the robustness settings and those of
  the tasks in TASK_SETTINGS by task name."""
  launcher_flags.check_path_flags()
  list_flags = ("tasks", "init", "ood_sets") + tuple(
    f.name for f in dataclasses.fields(RobustnessConfig) if isinstance(f.default, tuple)
  )
  list_flags += tuple(
    f"{task}_{f.name}"
    for task, cls, _ in TASK_SETTINGS
    for f in dataclasses.fields(cls)
    if isinstance(f.default, tuple)
  )
  launcher_flags.check_nonempty_lists(list_flags)
  unknown = sorted(set(FLAGS.tasks or ()) - set(TASKS))
  if unknown:
    raise app.UsageError(f"--tasks: unknown tasks {unknown}; known: {sorted(TASKS)}")
  bad_init = sorted(set(FLAGS.init) - {"replay", "noise"})
  if bad_init or not FLAGS.init:
    raise app.UsageError(f"--init takes 'replay' and/or 'noise', got {FLAGS.init}")
  if not FLAGS.ood_sets:
    raise app.UsageError("--ood_sets is empty")
  for spec in FLAGS.ood_sets:
    try:
      check_ood_spec(spec)
    except ValueError as e:
      raise app.UsageError(f"--ood_sets: {e}") from e
  if FLAGS.feature_fn is not None:
    module, sep, function = FLAGS.feature_fn.partition(":")
    if not (module and sep and function) or ":" in function:
      raise app.UsageError(
        f"--feature_fn must look like 'package.module:function' or 'path/file.py:function', "
        f"got {FLAGS.feature_fn!r}"
      )
  if FLAGS.softmax_workdir is not None and not FLAGS.softmax_workdir.strip():
    raise app.UsageError("--softmax_workdir must be a path, got an empty value")
  launcher_flags.check_number("purify_delta", 0.0)  # finite too
  return robustness_options(), {task: task_options(task, cls) for task, cls, _ in TASK_SETTINGS}


def check_flags_against(config) -> None:
  """Flag errors that need the checkpoint's config: tasks that do not apply to the model."""
  try:
    check_tasks(FLAGS.tasks or (), config)
  except ValueError as e:
    raise app.UsageError(f"--tasks: {e}") from e


def robustness_options() -> RobustnessConfig:
  """The robustness task's settings from their flags; UsageError names the bad flag."""
  values = {}
  for field in dataclasses.fields(RobustnessConfig):
    value = FLAGS[field.name].value
    if isinstance(field.default, tuple):
      convert = (
        int if field.name == "sanity_steps" else (str if field.name == "attack_norms" else float)
      )
      try:
        value = tuple(convert(v) for v in value)
      except ValueError as e:
        raise app.UsageError(f"--{field.name}: {e}") from e
    values[field.name] = value
  try:
    return RobustnessConfig(**values)
  except ValueError as e:
    raise app.UsageError(f"--{e}") from e


def task_options(task: str, cls):
  """A task's settings ``cls`` from its flags (--<task>_<field>); UsageError names the bad flag."""
  values = {}
  for field in dataclasses.fields(cls):
    name = f"{task}_{field.name}"
    value = FLAGS[name].value
    if isinstance(field.default, tuple):
      convert = type(field.default[0])
      try:
        value = tuple(convert(v) for v in value)
      except ValueError as e:
        raise app.UsageError(f"--{name}: {e}") from e
    values[field.name] = value
  try:
    return cls(**values)
  except ValueError as e:
    raise app.UsageError(f"--{task}_{e}") from e


def ensure_softmax_baseline(workdir: str, config) -> str:
  """The softmax baseline's workdir (--softmax_workdir, default <workdir>/softmax_baseline),
  trained first, with the EBM's network and data, when it holds no checkpoint."""
  path = FLAGS.softmax_workdir or os.path.join(workdir, "softmax_baseline")
  if checkpoint.latest_step(path) is None:
    baseline = softmax_baseline(config)
    logging.info(
      "No softmax baseline in %s: training one now (objective softmax, %d steps; the same "
      "network and data as the EBM)",
      path,
      baseline.num_steps,
    )
    train_and_evaluate(baseline, path, data_dir=FLAGS.data_dir, manual_dir=FLAGS.manual_dir)
  return path


def _previous_report(path, step):
  """The report already at ``path`` if it is of the same checkpoint step, else {}."""
  if not os.path.exists(path):
    return {}
  with open(path) as f:
    report = json.load(f)
  return report if report.get("step") == step else {}


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  launcher_flags.quiet_library_logs()
  robustness, settings = check_flags()
  check_flags_against(launcher_flags.checkpoint_config(FLAGS.workdir, FLAGS.checkpoint_step))
  state, config = checkpoint.restore(FLAGS.workdir, FLAGS.checkpoint_step)
  if not FLAGS.ema_params:
    config = dataclasses.replace(config, ema_decay=0.0)  # sampling_params: the current ones
  try:
    ensemble = generate.historical_ensemble(FLAGS.workdir, config, int(state.step), FLAGS.ensemble)
  except ValueError as e:
    raise app.UsageError(f"--ensemble: {e}") from None
  tasks = FLAGS.tasks or default_tasks(config)
  softmax_workdir = None
  if "robustness" in tasks:
    softmax_workdir = ensure_softmax_baseline(FLAGS.workdir, config)
  out_dir = os.path.join(FLAGS.workdir, "eval")
  os.makedirs(out_dir, exist_ok=True)
  ctx = EvalContext(
    state=state,
    config=config,
    out_dir=out_dir,
    seed=FLAGS.seed,
    data_dir=FLAGS.data_dir,
    manual_dir=FLAGS.manual_dir,
    max_test=FLAGS.max_test,
    num_samples=FLAGS.num_samples,
    langevin_steps=FLAGS.steps,
    init=tuple(FLAGS.init),
    feature_fn=FLAGS.feature_fn,
    ood_sets=tuple(FLAGS.ood_sets),
    robustness=robustness,
    softmax_workdir=softmax_workdir,
    **settings,
    ensemble=ensemble,
  )
  path = os.path.join(out_dir, "report.json")
  report = _previous_report(path, int(state.step))
  report.update(
    workdir=os.path.abspath(FLAGS.workdir),
    step=int(state.step),
    dataset=config.dataset,
    conditional=config.conditional,
  )
  for task in tasks:
    t0 = time.time()
    report[task] = TASKS[task](ctx)
    logging.info("%s (%.1f s): %s", task, time.time() - t0, json.dumps(report[task])[:400])
    files.write_text(path, json.dumps(report, indent=2))  # after every task: nothing lost
  logging.info("Wrote %s", path)


if __name__ == "__main__":
  app.run(main)
