"""jebm.config: every field checked on construction (messages name the flag), the presets valid,
and config versions: round trips, version-0 records restored to their old behaviour, newer ones
refused."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from experiments.configs import presets
from jebm import checkpoint
from jebm import config as config_lib
from jebm.config import Config

# A checkpoint's config as the first checkpointing code wrote it (commit 8e4d955, before
# versions): the default preset of the time, example_shape filled in from the digits.
VERSION_0_FIRST = {
  "dataset": "digits",
  "example_shape": [8, 8, 1],
  "num_classes": 10,
  "model": "conv",
  "features": [64, 128],
  "activation": "swish",
  "spectral_norm": False,
  "langevin_steps": 40,
  "step_size": 10.0,
  "noise_scale": 0.005,
  "grad_clip": 0.01,
  "clip_mode": "elementwise",
  "x_min": 0.0,
  "x_max": 1.0,
  "l2_coeff": 1.0,
  "kl_coeff": 0.0,
  "kl_steps": 1,
  "learning_rate": 3e-4,
  "warmup_steps": 0,
  "b1": 0.0,
  "b2": 0.999,
  "buffer_capacity": 10000,
  "reinit_prob": 0.05,
  "init_low": 0.0,
  "init_high": 1.0,
  "batch_size": 128,
  "num_steps": 1000,
  "seed": 0,
  "checkpoint_every": 500,
  "keep_checkpoints": 3,
  "log_every": 50,
  "sample_every": 500,
  "max_energy": 1e4,
  "eval_langevin_steps": 200,
  "eval_num_samples": 1000,
}

# The fields of CONFIG_VERSION 4. Adding, removing or renaming a field (or changing what one
# means) must bump CONFIG_VERSION and add a migration that fills the new fields with the values
# reproducing the older version's behaviour; then update this list.
VERSION_1_FIELDS = sorted(
  list(VERSION_0_FIRST) + list(config_lib.VERSION_0_VALUES)  # added after the first checkpoints
)
VERSION_2_FIELDS = sorted(VERSION_1_FIELDS + ["ema_decay"])
VERSION_3_FIELDS = sorted(VERSION_2_FIELDS + ["augment"])
VERSION_4_FIELDS = sorted(VERSION_3_FIELDS + ["condition"])


def test_every_preset_and_its_softmax_baseline_is_a_valid_config():
  for name, preset in presets.PRESETS.items():
    assert dataclasses.replace(preset) == preset, name
    assert Config.from_dict(config_lib.config_to_dict(preset)) == preset, name
    if preset.class_conditional:  # a softmax classifier needs classes
      presets.softmax_baseline(preset)


@pytest.mark.parametrize(
  "overrides, message",
  [
    (dict(log_every=0), "--log_every must be an int >= 1, got 0"),
    (dict(checkpoint_every=0), "--checkpoint_every must be an int >= 1, got 0"),
    (dict(sample_every=0), "--sample_every must be an int >= 1"),
    (dict(batch_size=0), "--batch_size must be an int >= 1"),
    (dict(langevin_steps=0), "--langevin_steps must be an int >= 1"),
    (dict(num_steps=-5), "--num_steps must be an int >= 1, got -5"),
    (dict(keep_checkpoints=0), "--keep_checkpoints must be an int >= 1"),
    (dict(features=()), "--features must be a non-empty list of ints >= 1"),
    (dict(features=(8, 0)), "--features must be a non-empty list"),
    (dict(num_classes=1.5), "--num_classes must be an int >= 0, got 1.5"),
    (dict(num_classes=True), "--num_classes must be an int"),
    (dict(seed=-1), "--seed must be an int in"),
    (dict(step_size=float("nan")), "--step_size must be a finite number > 0, got nan"),
    (dict(learning_rate="1e-3"), "--learning_rate must be a finite number > 0"),
    (dict(max_energy=float("inf")), "--max_energy must be a finite number > 0"),
    (dict(ce_fraction=0.0), r"--ce_fraction must be a finite number in \(0, 1\]"),
    (dict(reinit_prob=1.5), r"--reinit_prob must be a finite number in \[0, 1\]"),
    (dict(b2=1.0), r"--b2 must be a finite number in \[0, 1\)"),
    (dict(noise_scale=-0.1), "--noise_scale must be a finite number >= 0"),
    (dict(spectral_norm="yes"), "--spectral_norm must be a bool"),
    (dict(dataset="nope"), "--dataset: unknown dataset 'nope'"),
    (dict(dataset="toy2d/nope"), "--dataset: Unknown dataset 'toy2d/nope'"),
    (dict(dataset=""), "--dataset: a dataset name must be a non-empty string"),
    (dict(model="resnet7"), "--model must be one of"),
    (dict(activation="gelu"), "--activation must be one of"),
    (dict(clip_mode="value"), "--clip_mode must be one of"),
    (dict(lr_schedule="linear"), "--lr_schedule must be one of"),
    (dict(negative_labels="random"), "--negative_labels must be one of"),
    (dict(objective="hinge"), "--objective must be one of"),
    (dict(on_divergence="retry"), "--on_divergence must be one of"),
    (dict(max_rollbacks=-1), "--max_rollbacks must be an int >= 0"),
    (dict(rollbacks=-1), "Config.rollbacks must be an int >= 0"),
    (dict(example_shape=(8, 0)), "Config.example_shape must be a list of ints >= 1"),
    (dict(x_min=1.0), "--x_min must be < --x_max"),
    (dict(init_high=-1.0), "--init_low must be < --init_high"),
    (dict(buffer_capacity=64), "--buffer_capacity must be >= --batch_size"),
    (dict(kl_coeff=1.0, kl_steps=20), "--kl_steps must be < --langevin_steps"),
    (dict(objective="softmax", num_classes=0), "--objective=softmax .* --num_classes > 0"),
    (dict(condition="colour"), "--condition must be one of"),
    (dict(condition="position", num_classes=10), "--condition=position is a vector of 2: set "),
    (dict(condition="shape", num_classes=3), "--ce_coeff=0.1 needs class ids"),
    (dict(condition="scale", num_classes=1, ce_coeff=0.0, negative_labels="uniform"), "uniform"),
  ],
)
def test_a_bad_field_is_a_value_error_naming_the_flag(overrides, message):
  with pytest.raises(ValueError, match=message):
    Config(**overrides)


def test_fields_take_plain_python_types():
  config = Config(step_size=5, features=[8, 16], num_steps=np.int64(30), example_shape=[2])
  assert type(config.step_size) is float and config.step_size == 5.0
  assert config.features == (8, 16) and config.example_shape == (2,)
  assert type(config.num_steps) is int
  hash(config)  # frozen and hashable: no lists left
  # Unconditional models ignore the conditional terms: still a valid config.
  Config(num_classes=0, negative_labels="uniform", ce_coeff=0.5)


def test_json_round_trip_carries_the_version():
  config = Config(example_shape=(8, 8, 1), features=(8, 16), rollbacks=2)
  record = json.loads(config.to_json())
  assert record["config_version"] == config_lib.CONFIG_VERSION
  assert Config.from_dict(record) == config
  assert json.loads(json.dumps(config_lib.config_to_dict(config))) == record


def test_the_fields_of_the_current_version_are_pinned():
  assert config_lib.CONFIG_VERSION == 4, "new version: update VERSION_4_FIELDS and this test"
  assert sorted(f.name for f in dataclasses.fields(Config)) == VERSION_4_FIELDS


def test_version_3_runs_were_conditioned_on_class_ids():
  record = {k: v for k, v in config_lib.config_to_dict(Config()).items() if k != "condition"}
  old = Config.from_dict(dict(record, config_version=3), source="a version-3 checkpoint")
  assert old.condition == "label" and old == Config() and old.class_conditional


def test_version_2_runs_had_no_augmentation():
  drop = ("augment", "condition")
  record = {k: v for k, v in config_lib.config_to_dict(Config()).items() if k not in drop}
  old = Config.from_dict(dict(record, config_version=2), source="a version-2 checkpoint")
  assert old.augment == "none" and old == Config()
  with pytest.raises(ValueError, match="--augment"):
    Config(augment="rotate")


def test_version_1_runs_had_no_parameter_average():
  drop = ("ema_decay", "augment", "condition")
  record = {k: v for k, v in config_lib.config_to_dict(Config()).items() if k not in drop}
  old = Config.from_dict(dict(record, config_version=1), source="a version-1 checkpoint")
  assert old.ema_decay == 0.0 and old == Config()


def test_version_0_restores_the_old_behaviour_not_todays_defaults():
  old = Config.from_dict(VERSION_0_FIRST, source="an old checkpoint")
  today = Config()
  assert (today.lr_schedule, today.ce_coeff) == ("cosine", 0.1)  # what a silent fill would give
  assert old.lr_schedule == "constant"
  schedule = config_lib.learning_rate(old)
  np.testing.assert_allclose([schedule(0), schedule(999)], [3e-4, 3e-4])
  tconfig = config_lib.train_config(old)
  assert (tconfig.negative_labels, tconfig.ce_coeff, tconfig.ce_fraction) == ("buffer", 0.0, 1.0)
  assert (tconfig.objective, old.time_limit_minutes) == ("cd", 0.0)
  assert (old.on_divergence, old.max_rollbacks, old.rollbacks) == ("stop", 0, 0)
  assert old.features == (64, 128) and old.langevin_steps == 40  # its own values stay


def test_version_0_written_between_field_additions_keeps_what_it_has():
  # Written after c526595 (negative_labels, the CE term, cosine decay), before ce_fraction.
  record = dict(
    VERSION_0_FIRST,
    lr_schedule="cosine",
    negative_labels="batch",
    ce_coeff=0.1,
    ce_temperature=0.5,
    time_limit_minutes=30.0,
  )
  config = Config.from_dict(record)
  assert (config.lr_schedule, config.negative_labels, config.ce_coeff) == ("cosine", "batch", 0.1)
  assert (config.ce_temperature, config.time_limit_minutes) == (0.5, 30.0)
  assert config.ce_fraction == 1.0  # the term used the whole batch then


@pytest.mark.parametrize("version", [config_lib.CONFIG_VERSION + 1, 99, "1", -1, 1.0, None])
def test_a_newer_or_unknown_version_is_refused_naming_it_and_the_source(version):
  record = dict(config_lib.config_to_dict(Config()), config_version=version)
  with pytest.raises(config_lib.ConfigVersionError, match=f"checkpoint X.*{version!r}"):
    Config.from_dict(record, source="checkpoint X")


def test_unknown_or_missing_fields_and_bad_values_name_the_source():
  record = config_lib.config_to_dict(Config())
  with pytest.raises(ValueError, match=r"checkpoint X .*missing \['seed'\]"):
    Config.from_dict({k: v for k, v in record.items() if k != "seed"}, source="checkpoint X")
  with pytest.raises(ValueError, match=r"unknown \['colour'\]"):
    Config.from_dict(dict(record, colour="red"))
  with pytest.raises(ValueError, match="checkpoint X: --log_every must be an int >= 1"):
    Config.from_dict(dict(record, log_every=0), source="checkpoint X")


def _config_file(workdir: Path) -> Path:
  """The JSON file orbax wrote the newest checkpoint's config to."""
  (path,) = workdir.glob("checkpoints/*/config/metadata")
  return path


def test_a_checkpoint_stores_the_version_and_an_old_one_restores_its_old_behaviour(tmp_path):
  config = Config(
    dataset="toy2d/8gaussians",
    example_shape=(2,),
    num_classes=0,
    model="mlp",
    features=(8,),
    batch_size=16,
    buffer_capacity=32,
  )
  with checkpoint.manager(str(tmp_path)) as mngr:
    checkpoint.save(mngr, config_lib.create_state(config), config)
    mngr.wait_until_finished()
  path = _config_file(tmp_path)
  record = json.loads(path.read_text())
  assert record["config_version"] == config_lib.CONFIG_VERSION
  assert checkpoint.load_config(str(tmp_path)) == config
  # The same checkpoint as the code before versions would have written it.
  old = {k: v for k, v in record.items() if k not in config_lib.VERSION_0_VALUES}
  del old["config_version"]
  path.write_text(json.dumps(old))
  restored = checkpoint.load_config(str(tmp_path))
  assert (restored.lr_schedule, restored.ce_coeff, restored.objective) == ("constant", 0.0, "cd")
  assert dataclasses.replace(restored, **config_lib.VERSION_0_VALUES) == restored
  path.write_text(json.dumps(dict(record, config_version=99)))
  with pytest.raises(ValueError, match="config_version 99"):
    checkpoint.load_config(str(tmp_path))
