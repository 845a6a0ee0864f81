"""Every flag of every launcher, given out-of-range, wrong-type and empty values, ends at once with
a one-line error naming the flag: exit status != 0, no Python traceback, no work done.

Each launcher defines its flags in absl's global FlagValues, so each is fuzzed in a process of its
own: this file, run as a script (``python tests/test_flag_fuzz.py train WORKDIR``), imports the
launcher and, for every bad command line, parses it with the launcher's flags and runs its
``main`` as ``app.run`` does, catching what ``app.run`` would print (a flags.Error from parsing,
an ``app.UsageError`` from ``main``). Real work (training, reading a checkpoint) is replaced by a
sentinel, so a value that gets past the checks counts as unclear instead of starting a run. It
prints one JSON line: tried / clear and the unclear cases. A few real launches prove the exit
status, the one-line message and the absence of a traceback end to end.

Flags not fuzzed: those defined outside ``experiments``, i.e. absl's own (--verbosity,
--logtostderr, --log_dir, --only_check_args, --pdb, ...; --help and --flagfile are handled by
absl itself) and the switches that importing libraries defines (orbax's
--experimental_orbax_use_distributed_*, tfds's --tfds_debug_list_dir, grain's --grain_* and
array_record's, which grain imports). The
test fails if a flag of any other module shows up, so that it is fuzzed or documented here.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAUNCHERS = (
  "train",
  "sample",
  "evaluate",
  "continual",
  "modes",
  "trajectories",
  "compose",
  "zero_shot",
  "traverse",
)
# Modules whose flags are not the launchers' own (see the module docstring).
EXCLUDED_MODULE_PREFIXES = (
  "absl.",
  "orbax.checkpoint.",
  "tensorflow_datasets.",
  "grain.",
  "array_record.",
)

# Int flags: the smallest allowed value; the fuzz tries the one below it.
INT_MIN = {
  # train (Config fields)
  "num_classes": 0,
  "langevin_steps": 1,
  "kl_steps": 1,
  "warmup_steps": 0,
  "buffer_capacity": 1,
  "batch_size": 1,
  "num_steps": 1,
  "seed": 0,
  "checkpoint_every": 1,
  "keep_checkpoints": 1,
  "log_every": 1,
  "sample_every": 1,
  "max_rollbacks": 0,
  "eval_langevin_steps": 1,
  "eval_num_samples": 1,
  "loader_workers": 0,
  # sample, evaluate
  "num_samples": 1,
  "steps": 1,
  "checkpoint_step": 0,
  "max_test": 1,
  "num_attack_images": 1,
  "num_adaptive_images": 1,
  "attack_steps": 1,
  "adaptive_attack_steps": 1,
  "attack_restarts": 1,
  "purify_steps": 0,
  "purify_chains": 1,
  "eot_samples": 1,
  "attack_batch_size": 1,
  "restore_num_images": 1,
  "restore_unknown_label_images": 0,
  "restore_noise_passes": 1,
  "restore_inpaint_passes": 1,
  "restore_crossclass_passes": 1,
  "restore_nn_samples_per_class": 1,
  "steps_num_samples": 2,
  "steps_adaptive_window": 2,
  "likelihood_chains": 1,
  "likelihood_leapfrog_steps": 1,
  "likelihood_num_images": 1,
  "ensemble": 1,
  # continual
  "seeds": 1,
  "num_tasks": 1,
  "validation": 0,
  "hidden_size": 1,
  "steps_per_task": 1,
  "offline_steps": 1,
  # modes
  "ebm_steps": 1,
  "baseline_steps": 1,
  "ebm_sample_steps": 1,
  "train_size": 256,
  # trajectories
  "context": 1,
  "num_train": 1,
  "num_test": 1,
  "predict_chains": 1,
  "predict_steps": 0,
  # zero_shot
  "size": 8,
  "position_steps": 1,
  "scale_steps": 1,
  "finetune_steps": 1,
  "generator_steps": 1,
  "sample_steps": 1,
  "num_held_out": 2,
  # traverse
  "k": 1,
  "refine_steps": 0,
}

# Out-of-range values beyond the generic ones (every float and list flag needs an entry; string
# flags without one get only the empty value: any non-empty --workdir, --data_dir or
# --softmax_workdir is a valid path, created when missing).
OUT_OF_RANGE = {
  "seed": [str(2**63)],
  "buffer_capacity": ["64"],  # below the preset's batch of 128
  "step_size": ["0", "-1"],
  "noise_scale": ["-1"],
  "grad_clip": ["-1"],
  "x_min": ["1"],  # not below x_max = 1
  "x_max": ["0"],
  "ce_coeff": ["-1"],
  "ce_temperature": ["0"],
  "ce_fraction": ["0", "1.5"],
  "l2_coeff": ["-1"],
  "kl_coeff": ["-1"],
  "learning_rate": ["0"],
  "b1": ["1", "-0.5"],
  "b2": ["1"],
  "ema_decay": ["1", "-0.1"],
  "reinit_prob": ["1.5", "-0.1"],
  "init_low": ["1"],  # not below init_high = 1
  "init_high": ["0"],
  "max_energy": ["0"],
  "time_limit_minutes": ["-1"],
  "purify_delta": ["-1"],
  "features": ["0", "8,-1"],
  "tasks": ["judge"],
  "init": ["bad"],
  "ood_sets": ["bogus", "npz:"],
  "attack_norms": ["l3"],
  "linf_epsilons": ["-0.1", "nan"],
  "l2_epsilons": ["-1", "inf"],
  "sanity_steps": ["5", "5,1", "0,5"],
  "preset": ["nope"],
  "dataset": ["nope", "toy2d/nope"],
  "model": ["resnet7"],
  "augment": ["rotate"],
  "out": ["samples.txt"],
  "feature_fn": ["nocolon", "a:b:c"],
  "manual_dir": ["/nonexistent/jebm/mnist"],
  "context": ["12"],
  "num_train": ["1001"],
  "num_test": ["101"],
  "attack_loss": ["hinge"],
  "restore_corruptions": ["blur", "gaussian,gaussian"],
  "restore_gaussian_sigma": ["0", "-1"],
  "steps_lengths": ["0", "5,2", "a"],
  "steps_adaptive_tol": ["0", "-1", "inf"],
  "likelihood_temperatures": ["1", "10,5", "x"],
  "likelihood_base": ["normal"],
  "likelihood_inverse_temperature": ["0", "-1", "inf"],
  "learners": ["bogus"],
  "cond_gain_init_std": ["-1"],
  "offline_learning_rate": ["0"],
  "densities": ["bogus", "rings,rings", "two_moons"],
  "workdirs": ["a"],  # one model, two conditions (BASE_ARGS)
  "conditions": ["1,2,3"],
  "mode": ["or"],
  "fractions": ["1.5", "x", "-0.1"],
  "distances": ["x", "nan"],
  "weights": ["0", "1,-1", "1,nan", "1,2,3"],
}


# Valid flags each bad value is tried with (it comes after them); launchers with a --workdir also
# get --workdir=<a missing folder>.
BASE_ARGS = {
  "compose": ["--workdirs=a,b", "--conditions=1,2", "--out=x.npz"],
  "traverse": ["--out=x.png"],
}


# --- The driver (runs in a process of its own) -----------------------------------------------


class ReachedWork(Exception):
  """Raised in place of the launcher's first piece of real work."""


def _stop_at_work(launcher, module):
  def stop(*args, **kwargs):
    raise ReachedWork

  if launcher == "train":
    module.train_and_evaluate = stop
  elif launcher == "continual":
    module.load_split = stop
  elif launcher == "modes":
    module.run_density = stop
  elif launcher == "trajectories":
    module.read_split = stop
  elif launcher == "zero_shot":
    module.slice_arrays = stop
  else:
    import jebm.checkpoint

    jebm.checkpoint.load_config = jebm.checkpoint.restore = stop


def _kind(flag, flags):
  for parser, kind in (
    (flags.BooleanParser, "bool"),
    (flags.EnumParser, "enum"),
    (flags.IntegerParser, "int"),
    (flags.FloatParser, "float"),
    (flags.BaseListParser, "list"),
  ):
    if isinstance(flag.parser, parser):
      return kind
  return "string"


def bad_values(name: str, kind: str):
  """The values tried for flag --name of parser kind ``kind``."""
  generic = {
    "bool": ["", "maybe"],
    "enum": ["", "bogus"],
    "int": ["", "abc", "1.5"] + ([str(INT_MIN[name] - 1)] if name in INT_MIN else []),
    "float": ["", "abc", "nan", "inf", "-inf"],
    "list": ["", "a,b"],
    "string": [""],
  }[kind]
  return generic + OUT_OF_RANGE.get(name, [])


def fuzz(launcher: str, workdir: str) -> dict:
  """Runs every bad value of every flag of ``experiments.<launcher>``; returns the report."""
  import importlib

  from absl import app, flags

  module = importlib.import_module(f"experiments.{launcher}")
  FLAGS = flags.FLAGS
  _stop_at_work(launcher, module)
  own, excluded = [], {}
  for module_name, defined in FLAGS.flags_by_module_dict().items():
    names = sorted({f.name for f in defined})
    if module_name.startswith("experiments"):
      own += names
    else:
      excluded[module_name] = names
  unclear, missing_ranges, tried, slowest = [], [], 0, 0.0
  for name in sorted(set(own)):
    kind = _kind(FLAGS[name], flags)
    if (kind == "int" and name not in INT_MIN) or (
      kind in ("float", "list") and name not in OUT_OF_RANGE
    ):
      missing_ranges.append(name)
    for value in bad_values(name, kind):
      base = BASE_ARGS.get(launcher, []) + (
        [f"--workdir={workdir}"] if "workdir" in own and name != "workdir" else []
      )
      argv = [launcher, *base, f"--{name}={value}"]
      FLAGS.unparse_flags()
      t0 = time.time()
      try:
        module.main(FLAGS(argv))
        message = "ACCEPTED (main returned)"
      except (flags.Error, app.UsageError) as e:
        message = str(e)
      except ReachedWork:
        message = "REACHED WORK (no check stopped it)"
      except Exception as e:  # a real run would print a traceback
        message = f"TRACEBACK {type(e).__name__}: {e}"
      seconds = time.time() - t0
      tried, slowest = tried + 1, max(slowest, seconds)
      one_line = message.strip() and "\n" not in message.strip()
      if not (f"--{name}" in message and one_line and seconds < 5):
        unclear.append({"argv": argv[1:], "message": message, "seconds": round(seconds, 2)})
  return {
    "launcher": launcher,
    "flags": sorted(set(own)),
    "excluded": excluded,
    "missing_ranges": missing_ranges,
    "tried": tried,
    "clear": tried - len(unclear),
    "unclear": unclear,
    "slowest_seconds": round(slowest, 3),
  }


# --- The tests -------------------------------------------------------------------------------


def _env(tmp_path):
  return dict(
    os.environ,
    PYTHONPATH=str(ROOT),
    JAX_PLATFORMS="cpu",
    JEBM_DATA_DIR=str(tmp_path / "data"),
    PYTHONUNBUFFERED="1",
  )


# Real launches: (launcher, flags, text of the last line of stderr). The workdir does not exist.
REAL = {
  "train_log_every": ("train", ["--log_every=0"], "--log_every must be an int >= 1, got 0"),
  "train_features": ("train", ["--features=a,b"], "--features takes comma-separated ints"),
  "sample_num_samples": ("sample", ["--num_samples=0"], "--num_samples"),
  "evaluate_init": ("evaluate", ["--init=bad"], "--init takes 'replay' and/or 'noise'"),
  "evaluate_no_checkpoint": ("evaluate", [], "--workdir: no checkpoint in"),
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """Every driver and real launch, started at once (they are mostly imports) and awaited."""
  tmp = tmp_path_factory.mktemp("fuzz")
  workdir = str(tmp / "missing_workdir")
  env, procs = _env(tmp), {}
  for launcher in LAUNCHERS:
    command = [sys.executable, str(Path(__file__).resolve()), launcher, workdir]
    procs[launcher] = subprocess.Popen(
      command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
  for key, (launcher, args, _) in REAL.items():
    command = [sys.executable, "-m", f"experiments.{launcher}", f"--workdir={workdir}", *args]
    procs[key] = subprocess.Popen(
      command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
  results = {}
  for key, proc in procs.items():
    stdout, stderr = proc.communicate(timeout=300)
    results[key] = (proc.returncode, stdout, stderr)
  return workdir, results


@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_every_bad_flag_value_is_a_clear_error(runs, launcher):
  _, results = runs
  rc, stdout, stderr = results[launcher]
  assert rc == 0, stderr[-3000:]
  report = json.loads(stdout.strip().splitlines()[-1])
  print(f"{launcher}: tried {report['tried']} / clear {report['clear']}")
  assert report["flags"] and not report["missing_ranges"], report["missing_ranges"]
  assert {"workdir", "workdirs"} & set(report["flags"])
  for module_name in report["excluded"]:
    assert module_name.startswith(EXCLUDED_MODULE_PREFIXES), report["excluded"]
  assert report["clear"] == report["tried"], json.dumps(report["unclear"], indent=1)[:4000]


def _error_line(stderr: str) -> str:
  """The line that says what is wrong: the last one, before absl's hint after a parse error."""
  lines = [line for line in stderr.strip().splitlines() if line.strip()]
  if lines and lines[-1].startswith("Pass --helpshort or --helpfull"):
    lines = lines[:-1]
  return lines[-1] if lines else ""


@pytest.mark.parametrize("key", sorted(REAL))
def test_real_launch_exits_with_one_line(runs, key):
  workdir, results = runs
  rc, _, stderr = results[key]
  assert rc != 0 and REAL[key][2] in _error_line(stderr), stderr[-3000:]
  assert "Traceback" not in stderr
  assert not os.path.exists(workdir)  # nothing was created: the checks came before any work


if __name__ == "__main__":
  print(json.dumps(fuzz(sys.argv[1], sys.argv[2])))
