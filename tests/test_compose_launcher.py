"""dSprites factor models end to end: tiny models train on float conditions read from the latents,
experiments/compose.py restores two of them and writes its samples, grid and read-out scores, and
bad input is a one-line error."""

import dataclasses
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import flax.serialization
import numpy as np
import pytest

import jebm.data as jd
from experiments import trainer
from experiments.configs import presets
from jebm import baselines, checkpoint
from jebm.data import dsprites as ds
from jebm.eval import readouts

ROOT = Path(__file__).resolve().parents[1]
SIZE = 16


def _tiny(preset):
  return dataclasses.replace(
    presets.get_preset(preset),
    dataset=f"dsprites@{SIZE}",
    features=(8, 8),
    langevin_steps=2,
    batch_size=16,
    buffer_capacity=32,
    num_steps=3,
    checkpoint_every=3,
    sample_every=3,
    time_limit_minutes=0.0,
  )


@pytest.fixture(scope="module")
def factor_models(tmp_path_factory):
  """(folder, {"pos": workdir, "shape": workdir, "digits": workdir}) of tiny trained models."""
  root = tmp_path_factory.mktemp("factors")
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(ds, "NUM_IMAGES", 300)  # the first 300 grid images: x in 0..9, y in 0..31
    workdirs = {name: str(root / name) for name in ("pos", "shape")}
    states = {
      name: trainer.train_and_evaluate(_tiny(f"dsprites_{name}"), workdir, data_dir=root)
      for name, workdir in workdirs.items()
    }
  digits = dataclasses.replace(
    presets.get_preset("default"), features=(8,), num_steps=1, batch_size=16, buffer_capacity=32
  )
  workdirs["digits"] = str(root / "digits")
  trainer.train_and_evaluate(digits, workdirs["digits"], data_dir=root)
  params = readouts.train(  # a barely trained read-out: the test checks the plumbing
    *readouts.training_set(64, SIZE, seed=0), baselines.BaselineConfig(num_steps=2, batch_size=8)
  )
  (root / "readouts.msgpack").write_bytes(flax.serialization.to_bytes(params))
  return root, workdirs, states


def test_a_factor_model_trains_on_float_conditions_read_from_the_latents(factor_models, tmp_path):
  root, workdirs, states = factor_models
  stored = np.asarray(states["pos"].replay.labels)  # the chains' conditions: the batches' (x, y)
  assert stored.shape == (32, 2) and stored.dtype == np.float32
  assert set(np.round(stored[:, 0] * 31).astype(int)) <= set(range(10)) and stored.any()
  shapes = np.asarray(states["shape"].replay.labels)  # one-hot; every image of the 300 a square
  np.testing.assert_array_equal(shapes, np.tile([1.0, 0.0, 0.0], (32, 1)))
  assert checkpoint.load_config(workdirs["pos"]).condition == "position"
  assert os.path.exists(os.path.join(workdirs["pos"], "samples", "step_0000003.png"))
  config = dataclasses.replace(_tiny("dsprites_pos"), dataset="digits")
  with pytest.raises(jd.DataError, match="--condition=position reads each record's dSprites"):
    trainer.train_batches(config, data_dir=tmp_path)


def _compose(*args):
  env = dict(os.environ, PYTHONPATH=str(ROOT))
  command = [sys.executable, "-m", "experiments.compose", *args]
  return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("mode", ["product", "sequential"])
def test_compose_restores_two_models_and_writes_samples_grid_and_readouts(factor_models, mode):
  root, workdirs, _ = factor_models
  out = root / f"{mode}.npz"
  result = _compose(
    f"--workdirs={workdirs['pos']},{workdirs['shape']}",
    "--conditions=0.2:0.7,heart",
    f"--mode={mode}",
    f"--out={out}",
    "--weights=1,0.5",
    "--num_samples=4",
    "--steps=2",
    f"--readouts={root / 'readouts.msgpack'}",
  )
  assert result.returncode == 0, result.stderr[-3000:]
  with np.load(out, allow_pickle=False) as arrays:
    assert arrays["images"].shape == (4, SIZE, SIZE, 1) and arrays["images"].dtype == np.uint8
    assert arrays["single_0"].shape == arrays["single_1"].shape == (4, SIZE, SIZE, 1)
  assert (root / f"{mode}.png").exists()
  report = json.loads((root / f"{mode}.json").read_text())
  assert report["asked"] == [{"position": [0.2, 0.7]}, {"shape": [2.0]}]
  assert report["weights"] == [1.0, 0.5]
  for key in ("single", "composition", "real", "chance"):
    assert set(report[key][0]) == {"position"} and set(report[key][1]) == {"shape"}
    assert np.isfinite(report[key][0]["position"]["mean"])
    assert 0 <= report[key][1]["shape"]["mean"] <= 1


@pytest.mark.parametrize(
  "args, message",
  [
    (["--conditions=0.2:0.7"], "--conditions has 1 entries but --workdirs 2"),
    (["--conditions=0.2,heart"], r"--conditions entry 1: '0.2' is not a position condition"),
    (["--conditions=0.2:0.7,heart", "--mode=negation", "--out=x.png"], "--out must be a path"),
  ],
)
def test_compose_bad_input_is_a_one_line_error(factor_models, args, message):
  _, workdirs, _ = factor_models
  result = _compose(f"--workdirs={workdirs['pos']},{workdirs['shape']}", "--out=/tmp/x.npz", *args)
  assert result.returncode != 0 and "Traceback" not in result.stderr
  assert re.search(message, result.stderr), result.stderr


def test_models_of_different_image_shapes_do_not_compose(factor_models):
  _, workdirs, _ = factor_models
  result = _compose(
    f"--workdirs={workdirs['pos']},{workdirs['digits']}",
    "--conditions=0.2:0.7,3",
    "--out=/tmp/x.npz",
  )
  assert result.returncode != 0 and "Traceback" not in result.stderr
  assert "the models see different example shapes" in result.stderr, result.stderr


def _traverse(*args):
  env = dict(os.environ, PYTHONPATH=str(ROOT))
  command = [sys.executable, "-m", "experiments.traverse", *args]
  return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_traverse_moves_a_real_image_along_hessian_directions_and_refines(factor_models):
  root, workdirs, _ = factor_models
  out = root / "traverse.png"
  result = _traverse(
    f"--workdir={workdirs['pos']}",
    "--condition=0.3:0.5",
    "--start=real",
    "--k=2",
    "--distances=-4,0,4",
    "--refine_steps=2",
    f"--out={out}",
  )
  assert result.returncode == 0, result.stderr[-3000:]
  assert out.exists()
  with np.load(root / "traverse.npz", allow_pickle=False) as a:
    start, directions, moved = a["start"], a["directions"], a["moved"]
    assert a["refined"].shape == moved.shape == (2, 3, SIZE, SIZE, 1)
    assert a["eigenvalues"][0] >= a["eigenvalues"][1]
    s, scale, angle = np.meshgrid(np.arange(3), ds.SCALES, ds.ORIENTATIONS, indexing="ij")
    at = np.stack(
      [s.ravel(), scale.ravel(), angle.ravel()] + [np.full(s.size, v) for v in (0.3, 0.5)]
    )
    candidates = readouts.drawn_images(ds.nearest_index(at.T), SIZE)[0]  # the real images at x, y
    assert np.abs(candidates - start).max(axis=(1, 2, 3)).min() < 1e-6
    np.testing.assert_allclose(np.sum(directions**2, axis=(1, 2, 3)), 1.0, rtol=1e-4)
    for j, distance in enumerate((-4, 0, 4)):
      expected = np.clip(start[None] + distance * directions, 0.0, 1.0)
      np.testing.assert_allclose(moved[:, j], expected, atol=1e-5)


def test_traverse_bad_input_is_a_one_line_error(factor_models):
  _, workdirs, _ = factor_models
  result = _traverse(f"--workdir={workdirs['pos']}", "--out=/tmp/x.png")
  assert result.returncode != 0 and "Traceback" not in result.stderr
  assert "--condition: the model in" in result.stderr and "needs a condition" in result.stderr


def test_zero_shot_writes_every_method_and_the_generator_curve(factor_models, tmp_path):
  root, _, _ = factor_models
  env = dict(os.environ, PYTHONPATH=str(ROOT))
  steps = [f"--{name}=2" for name in ("position", "scale", "finetune", "generator", "sample")]
  command = [
    sys.executable,
    "-m",
    "experiments.zero_shot",
    f"--workdir={tmp_path}",
    f"--size={SIZE}",
  ]
  command += [*[s.replace("=2", "_steps=2") for s in steps], "--num_held_out=4", "--fractions=0,1"]
  command.append(f"--readouts={root / 'readouts.msgpack'}")
  result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  report = json.loads((tmp_path / "zero_shot.json").read_text())
  for method in ("ebm_sum", "ebm_finetuned"):
    assert 0 <= report[method]["mse"] <= 1
    assert set(report[method]["readouts"]) == {"position_px", "scale"}
  assert [g["fraction"] for g in report["generator"]] == [0.0, 1.0]
  assert report["generator"][0]["num_extra_images"] == 0
  assert report["generator"][1]["num_extra_images"] == 5100 - 4  # every other held-out image
  assert report["settings"]["num_train"] == {"position": 1024, "scale": 24}
  assert (tmp_path / "zero_shot.png").exists()


def test_the_zero_shot_split_holds_out_every_large_square_off_centre():
  from experiments import zero_shot

  position, scale, test, extra = zero_shot.split(num_test=10, seed=0)
  classes = {
    name: ds.latent_classes(index)
    for name, index in (
      ("position", position),
      ("scale", scale),
      ("held", np.concatenate([test, extra])),
    )
  }
  assert (classes["position"][:, 1] == 0).all() and len(position) == 32 * 32
  centre = lambda c: np.isin(c[:, 3], (15, 16)) & np.isin(c[:, 4], (15, 16))
  assert centre(classes["scale"]).all() and len(set(classes["scale"][:, 1])) == 6
  held = classes["held"]
  assert (held[:, 1] > 0).all() and not centre(held).any() and len(held) == 5 * (1024 - 4)
  for c in classes.values():  # squares at the one orientation 30 pi / 39
    assert (c[:, 0] == 0).all() and (c[:, 2] == 15).all()
  assert len(set(position) & set(scale)) == 4  # scale 0.5 at the centre is in both slices
  assert len(set(np.concatenate([position, scale, test, extra]))) == 6 * 1024  # all, once each
