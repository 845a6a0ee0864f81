"""The launchers end to end: train on 2 devices or 2 processes, restore for sampling and
evaluation, config mismatch and divergence errors."""

import contextlib
import dataclasses
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from experiments import trainer
from experiments.configs import presets
from jebm import checkpoint, data, parallel
from jebm import config as config_lib

ROOT = Path(__file__).resolve().parents[1]
TINY = [
  "--preset=default",
  "--features=8,16",
  "--langevin_steps=4",
  "--batch_size=32",
  "--buffer_capacity=256",
  "--log_every=5",
  "--sample_every=20",
  "--eval_langevin_steps=5",
]


@pytest.fixture(scope="module")
def env(tmp_path_factory, compilation_cache_env):
  env = dict(
    os.environ,
    **compilation_cache_env,
    JEBM_DATA_DIR=str(tmp_path_factory.mktemp("data")),
    PYTHONUNBUFFERED="1",
    XLA_FLAGS="--xla_force_host_platform_device_count=2",
    JAX_PLATFORMS="cpu",
  )
  return env


def launch(module, *args, env, check=True, timeout=300):
  result = subprocess.run(
    launcher(module, *args),
    cwd=ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=timeout,
  )
  if check and result.returncode != 0:
    raise AssertionError(f"{module} failed:\n{result.stderr[-3000:]}")
  return result


def run_together(commands, timeout=300):
  """Runs (argv, env) pairs at once (a launch is mostly start-up) and returns their
  CompletedProcess results, in order."""
  procs = [
    subprocess.Popen(
      argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    for argv, env in commands
  ]
  results = []
  for proc, (argv, _) in zip(procs, commands):
    out, err = proc.communicate(timeout=timeout)
    results.append(subprocess.CompletedProcess(argv, proc.returncode, out, err))
  return results


def launcher(module, *args):
  """The command line of ``python -m experiments.<module> args``."""
  return [sys.executable, "-m", f"experiments.{module}", *args]


def params_of(workdir):
  state, _ = checkpoint.restore(str(workdir))
  return int(state.step), jax.tree.leaves(jax.device_get(state.params))


@pytest.fixture(scope="module")
def trained(tmp_path_factory, env):
  """A 20-step run of the tiny default preset on 2 emulated devices."""
  workdir = tmp_path_factory.mktemp("run") / "w"
  result = launch(
    "train", *TINY, f"--workdir={workdir}", "--num_steps=20", "--checkpoint_every=10", env=env
  )
  assert "step 20/20" in result.stderr
  return workdir


def test_train_writes_config_checkpoints_samples_and_summaries(trained):
  config = json.loads((trained / "config.json").read_text())
  assert config["example_shape"] == [8, 8, 1] and config["num_steps"] == 20
  assert sorted(os.listdir(trained / "checkpoints"))[-2:] == ["10", "20"]
  assert (trained / "samples" / "step_0000020.png").exists()
  assert any(name.startswith("events.out.tfevents") for name in os.listdir(trained))


def test_config_mismatch_names_the_fields(trained, env):
  result = launch(
    "train",
    *TINY,
    f"--workdir={trained}",
    "--num_steps=25",
    "--l2_coeff=0.5",
    "--step_size=3",
    env=env,
    check=False,
  )
  assert result.returncode != 0
  assert "l2_coeff" in result.stderr and "step_size" in result.stderr
  assert "different config" in result.stderr


def test_divergence_guard_stops_the_run(tmp_path, env):
  result = launch(
    "train",
    *TINY,
    f"--workdir={tmp_path / 'w'}",
    "--num_steps=10",
    "--max_energy=1e-9",
    env=env,
    check=False,
  )
  assert result.returncode != 0
  assert "training diverged at step 1" in result.stderr


def test_sample_restores_the_checkpoint(trained, env, tmp_path):
  out = tmp_path / "s.npz"
  launch("sample", f"--workdir={trained}", "--num_samples=3", f"--out={out}", "--steps=5", env=env)
  with np.load(out) as f:
    assert f["images"].shape == (30, 8, 8, 1) and f["images"].dtype == np.uint8
    np.testing.assert_array_equal(f["labels"], np.repeat(np.arange(10), 3))
  assert out.with_suffix(".png").exists()


def test_sample_of_a_missing_checkpoint_step_is_a_one_line_error(trained, env):
  result = launch("sample", f"--workdir={trained}", "--checkpoint_step=999", env=env, check=False)
  last = result.stderr.strip().splitlines()[-1]
  assert result.returncode != 0 and "Traceback" not in result.stderr
  assert last.startswith("--checkpoint_step: no checkpoint for step 999") and "[10, 20]" in last


# --- Checkpoints are not tied to the device count ----------------------------------------------


def one_device(env):
  return dict(env, XLA_FLAGS="--xla_force_host_platform_device_count=1")


def _copy(workdir, tmp_path):
  shutil.copytree(workdir, tmp_path / "w")
  return tmp_path / "w"


def _logical_buffer(workdir, mesh=None):
  """The newest checkpoint's buffer in logical order, as restored on one device or on ``mesh``."""
  state, _ = checkpoint.restore(str(workdir), mesh=mesh)
  assert parallel.num_shards(state.replay.images) == (1 if mesh is None else mesh.size)
  return jax.device_get(parallel.to_logical_order(state).replay)


def test_two_device_run_is_sampled_evaluated_and_resumed_by_a_one_device_process(
  trained, env, tmp_path
):
  workdir, copy = _copy(trained, tmp_path), tmp_path / "copy"
  shutil.copytree(workdir, copy)
  out = tmp_path / "s.npz"
  # In a notebook: the whole buffer (both devices' shards) is one buffer on one device.
  code = (
    "from jebm import checkpoint, replay; import jax, numpy as np; "
    f"s, _ = checkpoint.restore({str(workdir)!r}); "
    "_, _, i = replay.sample(jax.random.key(0), s.replay, 5000, init_fn=replay.uniform_init(), "
    "reinit_prob=0.0); print(jax.device_count(), int(s.replay.size), len(np.unique(i)))"
  )
  evaluation = ["--tasks=classify,ood", "--max_test=40"]
  results = run_together(
    [
      (
        launcher("sample", f"--workdir={workdir}", "--num_samples=2", f"--out={out}", "--steps=3"),
        one_device(env),
      ),
      (launcher("evaluate", f"--workdir={workdir}", *evaluation), one_device(env)),
      (
        launcher("evaluate", f"--workdir={copy}", *evaluation),
        env,
      ),  # the same numbers on 2 devices
      ([sys.executable, "-c", code], one_device(env)),
    ]
  )
  for result in results:
    assert result.returncode == 0, result.stderr[-3000:]
  assert np.load(out)["images"].shape == (20, 8, 8, 1)
  report = json.loads((workdir / "eval" / "report.json").read_text())
  again = json.loads((copy / "eval" / "report.json").read_text().replace(str(copy), str(workdir)))
  assert report["step"] == again["step"] == 20
  assert report["classify"] == again["classify"] and report["ood"] == again["ood"]
  assert results[-1].stdout.split() == ["1", "256", "256"], results[-1].stderr[-2000:]
  shutil.rmtree(workdir / "checkpoints" / "20")  # resume from step 10, on one device
  launch("train", *TINY, f"--workdir={workdir}", "--num_steps=20", env=one_device(env))
  assert checkpoint.latest_step(str(workdir)) == 20


def test_two_processes_train_like_one_process_with_two_devices(trained, env, tmp_path):
  """jax.distributed on localhost: 2 processes x 1 CPU device end where the `trained` run (1
  process x 2 devices, same flags) ended, also when they resume reading their shards of each
  batch through grain (the `trained` run read them from memory)."""
  workdir = tmp_path / "w"
  args = [*TINY, f"--workdir={workdir}", "--num_steps=20", "--checkpoint_every=10"]
  train_on_two_processes(args, env)
  (step, params), (trained_step, trained_params) = params_of(workdir), params_of(trained)
  assert step == trained_step == 20
  for a, b in zip(params, trained_params):
    np.testing.assert_allclose(a, b, atol=1e-6)
  assert len(list(workdir.glob("events.out.tfevents.*"))) == 1  # process 0's only
  shutil.rmtree(workdir / "checkpoints" / "20")  # resume from step 10, on both processes
  assert "Resumed from step 10" in train_on_two_processes([*args, "--loader=grain"], env)
  step, params = params_of(workdir)
  assert step == 20
  for a, b in zip(params, trained_params):
    np.testing.assert_allclose(a, b, atol=1e-6)


def train_on_two_processes(args, env) -> str:
  """Runs experiments.train as 2 processes of one jax.distributed job; returns process 0's log."""
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  procs = [
    subprocess.Popen(
      [sys.executable, "-m", "experiments.train", *args],
      cwd=ROOT,
      env=dict(
        env,
        XLA_FLAGS="--xla_force_host_platform_device_count=1",
        JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
        JAX_NUM_PROCESSES="2",
        JAX_PROCESS_ID=str(i),
      ),
      stdout=subprocess.DEVNULL,
      stderr=subprocess.PIPE,
      text=True,
    )
    for i in range(2)
  ]
  try:
    errors = [p.communicate(timeout=300)[1] for p in procs]
  finally:
    for p in procs:
      p.kill()  # once jax.distributed is up, JAX catches SIGTERM
  assert [p.returncode for p in procs] == [0, 0], errors[0][-2000:] + errors[1][-2000:]
  return errors[0]


def test_multi_process_environment_errors_are_clear(env, tmp_path):
  result = launch(
    "train",
    *TINY,
    f"--workdir={tmp_path / 'w'}",
    env=dict(env, JAX_COORDINATOR_ADDRESS="127.0.0.1:1", JAX_NUM_PROCESSES="two"),
    check=False,
  )
  assert result.returncode != 0 and "Traceback" not in result.stderr
  assert "JAX_NUM_PROCESSES must be an int, got 'two'" in result.stderr


def test_buffer_survives_two_to_one_and_one_to_two_devices(tmp_path, env):
  """Partly filled buffers (odd per-device fill on 2 devices) keep every entry in its slot."""
  args = [*TINY, "--buffer_capacity=512", "--checkpoint_every=3", "--lr_schedule=constant"]
  one = tmp_path / "one"
  launch("train", *args, f"--workdir={one}", "--num_steps=3", env=one_device(env))
  two = _copy(one, tmp_path)  # 96 entries written by 1 device ...
  launch("train", *args, f"--workdir={two}", "--num_steps=6", env=env)  # ... then 96 by 2
  mesh = parallel.make_mesh()
  for workdir, size in ((one, 96), (two, 192)):
    single, sharded = _logical_buffer(workdir), _logical_buffer(workdir, mesh)
    assert int(single.size) == int(sharded.size) == size
    np.testing.assert_array_equal(single.images, sharded.images)
    np.testing.assert_array_equal(single.labels, sharded.labels)
  before, after = _logical_buffer(one), _logical_buffer(two)
  np.testing.assert_array_equal(after.images[:96], before.images[:96])  # the old entries stay
  assert np.any(after.images[96:192]) and not np.any(after.images[192:])
  launch("train", *args, f"--workdir={two}", "--num_steps=9", env=one_device(env))  # and back
  assert int(_logical_buffer(two).size) == 288


# --- Evaluation ----------------------------------------------------------------------------------


def test_evaluate_writes_every_task_of_the_report(trained, env, tmp_path):
  workdir = _copy(trained, tmp_path)
  ood_npz = tmp_path / "ood.npz"
  np.savez(ood_npz, images=np.full((12, 8, 8, 1), 200, np.uint8))
  launch(
    "evaluate",
    f"--workdir={workdir}",
    "--num_samples=20",
    "--steps=3",
    "--max_test=60",
    f"--ood_sets=uniform,gaussian,constant,inverted,interp,npz:{ood_npz}",
    env=env,
  )
  report = json.loads((workdir / "eval" / "report.json").read_text())
  assert set(report) >= {"sample_quality", "classify", "histograms", "ood"}
  assert report["classify"]["num_examples"] == 60
  assert report["classify"]["at_ce_temperature"]["temperature"] == 0.01  # the default's CE term
  scores = {"neg_min_energy", "logsumexp", "neg_grad_norm", "baseline_judge_max_softmax"}
  assert set(report["ood"]) == scores
  assert report["classify"]["baseline_judge_accuracy"] > 0.9  # a convnet on real digits
  for score in report["ood"].values():
    assert set(score) == {
      "uniform",
      "gaussian",
      "constant",
      "inverted",
      "interp",
      f"npz:{ood_npz}",
      "average",
    }
  assert {"replay", "noise"} == set(report["sample_quality"])
  for png in ("confusion_matrix", "ood_logsumexp", "energy_histograms", "samples_noise"):
    assert (workdir / "eval" / f"{png}.png").exists(), png
  # A second run of some tasks keeps the other tasks' results of the same checkpoint. Its
  # sample_quality chains cycle through the energies of the last two checkpoints.
  launch(
    "evaluate",
    f"--workdir={workdir}",
    "--tasks=histograms,sample_quality,steps,likelihood",
    "--max_test=30",
    "--num_samples=20",
    "--steps=3",
    "--init=noise",
    "--ensemble=2",
    "--steps_lengths=2,5",
    "--steps_num_samples=20",
    "--likelihood_temperatures=2,10",
    "--likelihood_chains=2",
    "--likelihood_num_images=60",
    env=env,
  )
  again = json.loads((workdir / "eval" / "report.json").read_text())
  assert again["classify"] == report["classify"] and again["histograms"]["num_test"] == 30
  assert again["sample_quality"]["noise"]["ensemble_checkpoints"] == [20, 10]
  steps = again["steps"]
  assert set(steps) == {"real", "noise", "adaptive", "settings"}  # --init=noise
  assert set(steps["noise"]) == {"2", "5"} and steps["noise"]["5"]["judge_accuracy"] >= 0
  assert 1 <= steps["adaptive"]["steps_mean"] <= 5
  likelihood = again["likelihood"]
  assert likelihood["log_z_lower"] <= likelihood["log_z_upper"] + 1  # an 8x8 box: log Z ~ 0
  assert set(likelihood["paths"]) == {"2", "10"} and 0 < likelihood["bits_per_dim"] < 16
  for png in ("steps_fid_judge", "steps_samples", "steps_adaptive", "likelihood_gap"):
    assert (workdir / "eval" / f"{png}.png").exists(), png


def test_evaluate_bad_input_is_a_clear_error(trained, env, tmp_path):
  wrong = tmp_path / "wrong.npz"
  np.savez(wrong, images=np.zeros((3, 28, 28, 1), np.uint8))
  result = launch(
    "evaluate",
    f"--workdir={trained}",
    "--tasks=ood",
    f"--ood_sets=npz:{wrong}",
    env=env,
    check=False,
  )
  assert result.returncode != 0 and "(28, 28, 1)" in result.stderr and "(8, 8, 1)" in result.stderr
  robustness = "--tasks=robustness"
  cases = {
    ("--tasks=judge",): "unknown tasks ['judge']",
    ("--likelihood_temperatures=1",): "--likelihood_temperatures: the number of temperatures must",
    ("--steps_lengths=5,2",): "--steps_lengths must increase",
    ("--ensemble=3",): "--ensemble: an ensemble of 3 checkpoints up to step 20 needs 2 earlier",
    (
      robustness,
      "--linf_epsilons=0,-0.1",
    ): "--linf_epsilons: attack epsilons must be finite and >= 0",
    (robustness, "--attack_norms=l3"): "--attack_norms: unknown",
    (robustness, "--attack_steps=0"): "--attack_steps must be an int >= 1",
    (robustness, "--l2_epsilons=a"): "--l2_epsilons: could not convert",
  }
  results = run_together([(launcher("evaluate", f"--workdir={trained}", *f), env) for f in cases])
  for (flags, message), result in zip(cases.items(), results):
    assert result.returncode != 0 and message in result.stderr, (flags, result.stderr[-2000:])
    assert "Traceback" not in result.stderr, flags


TINY_ATTACKS = [
  "--tasks=robustness",
  "--max_test=40",
  "--num_attack_images=24",
  "--num_adaptive_images=8",
  "--attack_steps=3",
  "--adaptive_attack_steps=2",
  "--attack_restarts=2",
  "--eot_samples=1",
  "--purify_steps=2",
  "--sanity_steps=1,3",
  "--linf_epsilons=0,0.3",
  "--l2_epsilons=0,3",
  "--attack_batch_size=8",
]


def test_robustness_trains_its_softmax_baseline_and_writes_every_curve(trained, env, tmp_path):
  workdir = _copy(trained, tmp_path)
  result = launch("evaluate", f"--workdir={workdir}", *TINY_ATTACKS, env=env)
  assert "No softmax baseline in" in result.stderr and "training one now" in result.stderr
  baseline = json.loads((workdir / "softmax_baseline" / "config.json").read_text())
  assert baseline["objective"] == "softmax" and baseline["features"] == [8, 16]
  report = json.loads((workdir / "eval" / "report.json").read_text())["robustness"]
  for norm, eps in (("linf", 0.3), ("l2", 3.0)):
    assert set(report[norm]) == {
      "softmax",
      "ebm",
      "ebm_purified_transfer",
      "ebm_purified_bpda_eot",
      "ebm_purified_backprop",
      "ebm_purified_any_attack",
    }
    for entries in report[norm].values():
      assert [e["epsilon"] for e in entries] == [0.0, eps]
      assert all(0.0 <= e["accuracy"] <= 1.0 for e in entries)
    assert (workdir / "eval" / f"robustness_{norm}.png").exists()
  assert report["linf"]["ebm_purified_backprop"][0]["num_images"] == 8
  assert report["settings"]["attack_restarts"] == 2
  # A second run (of one norm) restores the baseline instead of training it again.
  again = launch("evaluate", f"--workdir={workdir}", *TINY_ATTACKS, "--attack_norms=linf", env=env)
  assert "training one now" not in again.stderr


def test_classify_on_an_unconditional_checkpoint_is_an_error(tmp_path, env):
  workdir = tmp_path / "u"
  launch("train", *TINY, "--num_classes=0", f"--workdir={workdir}", "--num_steps=2", env=env)
  tasks = ("--tasks=classify", "--tasks=robustness", "--tasks=ood")  # the first two need labels
  *errors, ood = run_together(
    [(launcher("evaluate", f"--workdir={workdir}", task, "--max_test=20"), env) for task in tasks]
  )
  for result in errors:
    assert result.returncode != 0 and "needs a conditional model" in result.stderr
    assert "Traceback" not in result.stderr
  assert ood.returncode == 0, ood.stderr[-3000:]
  report = json.loads((workdir / "eval" / "report.json").read_text())
  assert set(report["ood"]) == {"neg_energy", "neg_grad_norm", "baseline_judge_max_softmax"}
  assert "classify" not in report


def test_default_tasks_of_a_model_without_images_or_labels(tmp_path, env):
  workdir = tmp_path / "toy"
  launch(
    "train", "--preset=toy2d", f"--workdir={workdir}", "--num_steps=5", "--batch_size=64", env=env
  )
  launch("evaluate", f"--workdir={workdir}", "--max_test=50", env=env)
  report = json.loads((workdir / "eval" / "report.json").read_text())
  assert {"ood", "histograms"} <= set(report)
  assert "classify" not in report and "sample_quality" not in report
  result = launch(
    "evaluate", f"--workdir={workdir}", "--tasks=sample_quality", env=env, check=False
  )
  assert result.returncode != 0 and "needs image data" in result.stderr


def test_every_preset_builds_its_train_config_and_the_paper_presets_use_batch_labels():
  for name, preset in presets.PRESETS.items():
    shape = (2,) if name == "toy2d" else (8, 8, 1)
    tconfig = config_lib.train_config(dataclasses.replace(preset, example_shape=shape))
    assert tconfig.conditional == (preset.num_classes > 0), name
  for name in ("cifar10_uncond", "cifar10_cond", "imagenet32_cond", "imagenet128_cond"):
    assert presets.PRESETS[name].negative_labels == "batch", name
    assert presets.PRESETS[name].ce_coeff == 0, name
  # The softmax baselines train the EBM's own network on its data, as long, by cross-entropy.
  for ebm, baseline in (("default", "digits_softmax"), ("mnist_cond", "mnist_softmax")):
    a, b = presets.PRESETS[ebm], presets.PRESETS[baseline]
    same = ("dataset", "num_classes", "model", "features", "activation", "spectral_norm")
    assert all(getattr(a, k) == getattr(b, k) for k in same + ("num_steps",)), baseline
    assert (b.objective, b.ce_temperature, a.objective) == ("softmax", 1.0, "cd"), baseline
  # The conditional terms do not apply to an unconditional model: no error, no CE term.
  uncond = dataclasses.replace(presets.PRESETS["default"], num_classes=0, example_shape=(8, 8, 1))
  assert presets.PRESETS["default"].ce_coeff > 0 and config_lib.train_config(uncond).ce_coeff == 0


# --- Bad training data: a clear error before any work ------------------------------------------


def _digits_like(n=64):
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (n, 8, 8, 1), dtype=np.uint8)
  return {"image": images, "label": rng.integers(0, 10, n).astype(np.int32)}


def _with(key, fn):
  return lambda arrays: {**arrays, key: fn(arrays[key])}


def _nan_at_3(images):
  images = images.astype(np.float32) / 255
  images[3, 0, 0, 0] = np.nan
  return images


@pytest.mark.parametrize(
  "change, overrides, message",
  [
    (
      _with("image", _nan_at_3),
      {},
      r"1 examples hold NaN or infinite values \(the first: example 3",
    ),
    (_with("image", lambda x: x.astype(np.int64)), {}, "'image' has dtype int64"),
    (_with("image", lambda x: x.astype(np.float32) / 127.5), {}, r"values span \[0, 2\]"),
    (lambda a: a, dict(x_max=0.5), r"outside the range \[x_min, x_max\] = \[0, 0.5\]"),
    (_with("label", lambda y: np.where(y == 3, 10, y)), {}, r"\[0, 10\)"),
    (_with("label", lambda y: y - 1), {}, "labels lie outside"),
    (_with("label", lambda y: y.astype(np.float32)), {}, "labels must be int class ids"),
    (_with("label", lambda y: y[:10]), {}, r"labels must be \[N\] = \[64\]"),
    (lambda a: {"image": a["image"]}, {}, "has no labels"),
    (lambda a: a, dict(batch_size=128, buffer_capacity=128), "--batch_size=128 exceeds the 64"),
    (lambda a: a, dict(example_shape=(28, 28, 1)), "does not match the data"),
  ],
)
def test_bad_training_data_is_a_clear_error(monkeypatch, change, overrides, message):
  arrays = change(_digits_like())
  monkeypatch.setattr(trainer.data, "arrays", lambda *args, **kwargs: arrays)
  small = dict(batch_size=32, buffer_capacity=64)
  config = dataclasses.replace(presets.PRESETS["default"], **{**small, **overrides})
  with pytest.raises(data.DataError, match=message):
    trainer.load_train_data(config)


def test_missing_data_is_a_data_error_and_unconditional_runs_ignore_labels(monkeypatch, tmp_path):
  def missing(*args, **kwargs):
    raise FileNotFoundError("TFDS dataset 'x' is not prepared")

  config = dataclasses.replace(presets.PRESETS["default"], batch_size=32, buffer_capacity=64)
  monkeypatch.setattr(trainer.data, "arrays", missing)
  with pytest.raises(data.DataError, match="is not prepared"):
    trainer.load_train_data(config)
  unprepared = dataclasses.replace(config, dataset="cifar10")
  with pytest.raises(data.DataError, match="tfds build cifar10"):  # the streaming loader too
    trainer.train_batches(unprepared, loader="grain", data_dir=str(tmp_path))
  arrays = {**_digits_like(), "label": np.full(64, 99, np.int32)}
  monkeypatch.setattr(trainer.data, "arrays", lambda *args, **kwargs: arrays)
  unconditional = dataclasses.replace(config, num_classes=0)
  assert trainer.load_train_data(unconditional)["image"].shape == (64, 8, 8, 1)


def test_quickstart_notebook_runs_and_restores_a_launcher_checkpoint(trained, monkeypatch):
  """examples/quickstart.ipynb top to bottom (300 chains, 20 training steps, the checkpoint
  section pointed at the launcher's run), so that the notebook cannot rot."""
  import nbformat
  from nbclient import NotebookClient

  notebook = nbformat.read(ROOT / "examples" / "quickstart.ipynb", as_version=4)
  monkeypatch.setenv("QUICKSTART_CHAINS", "300")  # the kernel inherits the environment
  monkeypatch.setenv("QUICKSTART_TRAIN_STEPS", "20")
  monkeypatch.setenv("QUICKSTART_WORKDIR", str(trained))
  NotebookClient(notebook, timeout=300, kernel_name="python3").execute(cwd=str(ROOT / "examples"))
  outputs = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs]
  assert sum("image/png" in o.get("data", {}) for o in outputs) == 3
  text = "".join(o.get("text", "") for o in outputs)
  assert "20 steps:" in text and "10 classes, samples (100, 8, 8, 1)" in text


def test_training_reads_images_of_varying_size_resized(variable_size_images):
  """A dataset of images of varying size (as imagenet2012) trains as NAME@SIZE through either
  loader, and without a size fails before any work with the DataError that says to name one."""
  config = dataclasses.replace(presets.PRESETS["default"], batch_size=4, num_classes=2, seed=1)
  sized = dataclasses.replace(config, dataset="variable_size_images@16")
  read = lambda c, loader: trainer.train_batches(c, loader=loader, data_dir=variable_size_images)
  (memory_shape, memory), (grain_shape, streamed) = read(sized, "memory"), read(sized, "grain")
  assert memory_shape == grain_shape == (16, 16, 3)
  with contextlib.closing(memory(2)) as a, contextlib.closing(streamed(2)) as b:
    for _ in range(3):
      np.testing.assert_array_equal(next(a)["image"], next(b)["image"])
  unsized = dataclasses.replace(config, dataset="variable_size_images")
  for loader in ("memory", "grain"):
    with pytest.raises(data.DataError, match="varying size.*@SIZE"):
      read(unsized, loader)


def test_train_batches_are_the_same_whichever_loader_reads_them(tmp_path, monkeypatch):
  config = dataclasses.replace(presets.PRESETS["default"], batch_size=32)
  read = lambda loader: trainer.train_batches(config, loader=loader, data_dir=str(tmp_path))
  (memory_shape, memory), (grain_shape, streamed) = read("memory"), read("grain")
  assert memory_shape == grain_shape == (8, 8, 1)
  monkeypatch.setattr(trainer, "MEMORY_LIMIT_BYTES", 0)  # 'auto' streams what is over the limit
  _, auto = read("auto")
  read_three = []
  for batches in (memory(5), streamed(5), auto(5)):  # from global batch 5 on
    with contextlib.closing(batches):
      read_three.append([next(batches) for _ in range(3)])
  for other in read_three[1:]:
    for a, b in zip(read_three[0], other):
      np.testing.assert_array_equal(a["image"], b["image"])
      np.testing.assert_array_equal(a["label"], b["label"])
  too_big = dataclasses.replace(config, batch_size=2048)
  for loader in ("memory", "grain"):
    with pytest.raises(data.DataError, match="--batch_size=2048 exceeds the 1497 examples"):
      trainer.train_batches(too_big, loader=loader, data_dir=str(tmp_path))
