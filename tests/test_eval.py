"""Evaluation tasks on toy energies with known answers, and the judge on real digits (and MNIST)."""

import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

import jebm.data as jd
from jebm import eval as jeval
from jebm.eval import judge_cache

SHAPE = (4, 4, 1)
NUM_CLASSES = 5
REAL_MNIST_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"


def _json_ok(report):
  json.dumps(report, allow_nan=False)  # Plain floats, ints, lists, strings only.
  return report


def _prototypes():
  return np.random.default_rng(0).random((NUM_CLASSES,) + SHAPE).astype(np.float32)


def prototype_energy(x, y=None):
  """E(x, y) = mean squared distance to prototype y: argmin_y is the nearest prototype."""
  protos = jnp.asarray(_prototypes())
  return jnp.mean(jnp.square(x - protos[y]).reshape(x.shape[0], -1), axis=1)


def _near_prototypes(n, seed=1):
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, NUM_CLASSES, n)
  images = np.clip(_prototypes()[labels] + 0.02 * rng.normal(size=(n,) + SHAPE), 0, 1)
  return images.astype(np.float32), labels


# --- Energy tasks on toy energies ---------------------------------------------------------------


def test_classification_report_is_argmin_over_classes():
  images, labels = _near_prototypes(37)
  report = _json_ok(
    jeval.classification_report(prototype_energy, images, labels, NUM_CLASSES, batch_size=8)
  )  # 37 = 4 chunks + a padded one.
  assert report["accuracy"] == 1.0 and report["num_examples"] == 37
  assert np.trace(report["confusion_matrix"]) == 37 and report["per_class_accuracy"][0] == 1.0
  wrong = labels.copy()
  wrong[:10] = (wrong[:10] + 1) % NUM_CLASSES
  report = jeval.classification_report(prototype_energy, images, wrong, NUM_CLASSES, batch_size=8)
  assert report["accuracy"] == pytest.approx(27 / 37)
  assert np.sum(report["confusion_matrix"]) == 37 and np.trace(report["confusion_matrix"]) == 27
  # Calibration of softmax(-E): the prototype energies are ~0.1 apart, so p(y|x) is nearly
  # uniform and the confidence (~0.2) is far below the accuracy (0.73): a large ECE.
  assert report["expected_calibration_error"] > 0.4
  sharp = lambda x, y: 1e3 * prototype_energy(x, y)  # confident and right on the true labels
  report = jeval.classification_report(sharp, images, labels, NUM_CLASSES, batch_size=8)
  assert report["expected_calibration_error"] < 1e-3 and report["nll"] < 1e-3
  # The same sharpening as a temperature: softmax(-E / 1e-3) of the unsharpened energy.
  tempered = jeval.classification_report(
    prototype_energy, images, labels, NUM_CLASSES, batch_size=8, ce_temperature=1e-3
  )["at_ce_temperature"]
  assert tempered["temperature"] == 1e-3
  assert tempered["expected_calibration_error"] == pytest.approx(
    report["expected_calibration_error"], abs=1e-6
  )


def test_min_energy_and_class_energies_match_numpy():
  images, _ = _near_prototypes(11)
  expected = np.mean(
    np.square(images[:, None] - _prototypes()[None]).reshape(11, NUM_CLASSES, -1), axis=2
  )
  table = jeval.class_energies(prototype_energy, images, NUM_CLASSES, batch_size=4)
  np.testing.assert_allclose(table, expected, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(
    jeval.min_energy(prototype_energy, images, NUM_CLASSES, batch_size=4),
    expected.min(1),
    rtol=1e-5,
    atol=1e-7,
  )
  unconditional = lambda x, y=None: prototype_energy(x, jnp.full(x.shape[0], 2))
  np.testing.assert_allclose(
    jeval.min_energy(unconditional, images, batch_size=4), expected[:, 2], rtol=1e-5, atol=1e-7
  )


def _nearest_prototype_energy(x, y=None):
  """Unconditionally: the distance to the nearest prototype, an energy of x alone."""
  per_class = [prototype_energy(x, jnp.full(x.shape[0], k)) for k in range(NUM_CLASSES)]
  return jnp.min(jnp.stack(per_class), axis=0)


def _synthetic_sets(images, names=jeval.SYNTHETIC_SETS):
  key = jax.random.key(0)
  return {
    n: jeval.synthetic_ood_set(n, jax.random.fold_in(key, i), images) for i, n in enumerate(names)
  }


def test_ood_benchmark_known_answers(tmp_path):
  images, _ = _near_prototypes(64)
  sets = _synthetic_sets(images, ("uniform", "gaussian", "constant", "inverted"))
  report = _json_ok(
    jeval.ood_benchmark(
      prototype_energy,
      images,
      sets,
      NUM_CLASSES,
      batch_size=16,
      histogram_path=str(tmp_path / "ood_{score}.png"),
    )
  )
  assert set(report) == {"neg_min_energy", "logsumexp", "neg_grad_norm"}
  # The energy is low only near the prototypes: every set is told apart by -min_y E.
  for name in sets:
    assert report["neg_min_energy"][name] > 0.99, report
  assert report["neg_min_energy"]["average"] == pytest.approx(
    np.mean([report["neg_min_energy"][n] for n in sets])
  )
  assert Image.open(tmp_path / "ood_logsumexp.png").format == "PNG"
  unconditional = jeval.ood_benchmark(_nearest_prototype_energy, images, sets, batch_size=16)
  assert set(unconditional) == {"neg_energy", "neg_grad_norm"}
  assert unconditional["neg_energy"]["average"] > 0.99
  # The gradient norm of a quadratic bowl grows with the distance: it separates the sets too.
  assert unconditional["neg_grad_norm"]["average"] > 0.99


def test_ood_benchmark_is_one_half_for_a_constant_energy():
  images, _ = _near_prototypes(20)
  constant = lambda x, y=None: jnp.zeros(x.shape[0])
  report = jeval.ood_benchmark(constant, images, _synthetic_sets(images), batch_size=16)
  for score in report.values():
    assert all(auroc == 0.5 for auroc in score.values()), score


def test_ood_interpolations_sit_between_the_modes():
  images, labels = _near_prototypes(200)
  report = jeval.ood_benchmark(
    prototype_energy, images, _synthetic_sets(images, ("interp",)), NUM_CLASSES, batch_size=50
  )
  # Means of two images of different classes lie between two prototypes (high energy); the mean
  # of two images of one class averages their noise away and lies nearer its prototype than the
  # test images do, so it ranks above them: the AUROC is about P(different classes).
  different = np.mean(labels != np.roll(labels, 1))
  assert report["neg_min_energy"]["interp"] == pytest.approx(different, abs=0.04)


def test_ood_sets_shapes_and_ranges():
  images, _ = _near_prototypes(6)
  sets = _synthetic_sets(images)
  for name, x in sets.items():
    assert x.shape == images.shape and float(x.min()) >= 0 and float(x.max()) <= 1, name
  constant = np.asarray(sets["constant"]).reshape(6, -1)
  np.testing.assert_array_equal(constant, constant[:, :1].repeat(constant.shape[1], 1))
  assert len(np.unique(constant[:, 0])) == 6
  np.testing.assert_allclose(sets["inverted"], 1 - images)
  np.testing.assert_allclose(sets["interp"][1], (images[0] + images[1]) / 2)
  gaussian = np.asarray(sets["gaussian"])
  assert 0.4 < gaussian.mean() < 0.6 and np.mean(gaussian == 0) > 0.05  # clipped N(0.5, 0.5²)
  with pytest.raises(ValueError, match="unknown synthetic OOD set"):
    jeval.synthetic_ood_set("stripes", jax.random.key(0), images)


def test_ood_npz_and_tfds_sets_and_their_errors(tmp_path, digits):
  data_dir, _, _ = digits
  images, _ = _near_prototypes(10)
  good, wrong = tmp_path / "good.npz", tmp_path / "wrong.npz"
  stored = np.random.default_rng(0).integers(0, 256, (7,) + SHAPE).astype(np.uint8)
  np.savez(good, images=stored)
  np.savez(wrong, images=np.zeros((3, 8, 8, 1), np.uint8))
  key = jax.random.key(0)
  loaded = jeval.load_ood_set(f"npz:{good}", key, images)
  np.testing.assert_allclose(loaded, stored / 255.0, atol=1e-7)
  assert len(jeval.load_ood_set(f"npz:{good}", key, images, max_examples=4)) == 4
  with pytest.raises(ValueError, match=r"shape \(8, 8, 1\).*shape \(4, 4, 1\)"):
    jeval.load_ood_set(f"npz:{wrong}", key, images)
  with pytest.raises(ValueError, match=r"shape \(8, 8, 1\).*shape \(4, 4, 1\)"):
    jeval.load_ood_set("tfds:digits", key, images, data_dir=data_dir)
  digits_test = jeval.load_ood_set("tfds:digits", key, np.zeros((2, 8, 8, 1)), data_dir=data_dir)
  assert digits_test.shape == (300, 8, 8, 1) and digits_test.max() <= 1.0
  np.savez(tmp_path / "floats.npz", images=np.zeros((2,) + SHAPE, np.float32))
  with pytest.raises(ValueError, match="uint8"):
    jeval.load_ood_set(f"npz:{tmp_path / 'floats.npz'}", key, images)
  np.savez(tmp_path / "other.npz", pictures=stored)
  with pytest.raises(ValueError, match="no 'images' array"):
    jeval.load_ood_set(f"npz:{tmp_path / 'other.npz'}", key, images)
  with pytest.raises(ValueError, match="cannot read"):
    jeval.load_ood_set(f"npz:{tmp_path / 'missing.npz'}", key, images)
  with pytest.raises(ValueError, match="unknown OOD set 'svhn'"):
    jeval.load_ood_set("svhn", key, images)


def test_energy_histogram_data(tmp_path):
  train, _ = _near_prototypes(30, seed=2)
  test = np.random.default_rng(3).random((25,) + SHAPE).astype(np.float32)
  report = _json_ok(
    jeval.energy_histogram_data(
      prototype_energy, train, test, NUM_CLASSES, path=tmp_path / "hist.png", batch_size=8
    )
  )
  for split, x in (("train", train), ("test", test)):
    e = jeval.min_energy(prototype_energy, x, NUM_CLASSES)
    assert report[f"{split}_mean"] == pytest.approx(e.mean(), rel=1e-5)
    assert report[f"{split}_std"] == pytest.approx(e.std(), rel=1e-4)
    assert report[f"num_{split}"] == len(x)
  assert report["train_mean"] < report["test_mean"]
  assert Image.open(report["png"]).format == "PNG"
  assert jeval.energy_histogram_data(prototype_energy, train, test, NUM_CLASSES)["png"] is None


def test_map_batches_pads_and_jits():
  x = jnp.arange(23.0).reshape(23, 1)
  fn = lambda b: (b[:, 0] * 2, b + 1)
  doubled, plus_one = jax.jit(lambda x: jeval.map_batches(fn, x, batch_size=5))(x)
  np.testing.assert_array_equal(doubled, np.arange(23.0) * 2)
  np.testing.assert_array_equal(plus_one, x + 1)


def test_map_host_chunks_takes_tuples_and_pads_to_few_sizes():
  sizes = []

  def fn(x, y):
    sizes.append(len(x))
    return x[:, 0] * 10 + y

  x, y = np.arange(23.0).reshape(23, 1), np.ones(23)
  np.testing.assert_array_equal(
    jeval.map_host_chunks(fn, (x, y), batch_size=8), np.arange(23.0) * 10 + 1
  )
  assert sizes == [8, 8, 8]  # the last 7 pad to 8, not to more
  sizes.clear()
  jeval.map_host_chunks(fn, (x[:2], y[:2]), batch_size=8)
  jeval.map_host_chunks(fn, (x[:3], y[:3]), batch_size=8)
  assert sizes == [2, 4]  # batch_size // 4, then // 2
  with pytest.raises(ValueError, match="one N"):
    jeval.map_host_chunks(fn, (x, y[:5]), batch_size=8)


def test_map_keyed_chunks_gives_chunk_i_the_key_fold_in_i():
  from jebm.eval.batching import map_keyed_chunks

  key = jax.random.key(3)
  seen = []

  def fn(k, x):
    seen.append(k)
    return x + 1

  np.testing.assert_array_equal(map_keyed_chunks(fn, key, np.zeros(10), batch_size=4), np.ones(10))
  expected = [jax.random.fold_in(key, i) for i in range(3)]
  assert [jax.random.key_data(k).tolist() for k in seen] == [
    jax.random.key_data(k).tolist() for k in expected
  ]


# --- The judge on sklearn's 8x8 digits ----------------------------------------------------------


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
  data_dir = tmp_path_factory.mktemp("data")
  return (
    data_dir,
    jd.arrays("digits", "train", data_dir=data_dir),
    jd.arrays("digits", "test", data_dir=data_dir),
  )


@pytest.fixture(scope="module")
def digits_judge(digits):
  data_dir, _, _ = digits
  start = time.time()
  judge, accuracy = jeval.load_or_train_judge("digits", data_dir=data_dir, seed=0)
  print(f"digits judge: test accuracy {accuracy:.4f} in {time.time() - start:.1f} s")
  return judge, accuracy


def _floats(images):
  return images.astype(np.float32) / 255.0


def test_judge_trains_on_digits_and_the_cache_round_trips(digits, digits_judge, monkeypatch):
  data_dir, _, test = digits
  judge, accuracy = digits_judge
  assert accuracy >= 0.95
  assert judge.config.image_shape == (8, 8, 1) and judge.config.num_classes == 10
  path = Path(data_dir) / "jebm_judges" / "digits_seed0.npz"
  assert path.is_file() and path == Path(jeval.judge_cache_path("digits", data_dir=data_dir))
  assert jeval.judge_accuracy(judge, _floats(test["image"]), test["label"]) == accuracy

  def no_training(*args, **kwargs):
    raise AssertionError("the cached judge should have been loaded")

  monkeypatch.setattr(judge_cache, "train_judge", no_training)
  loaded, loaded_accuracy = jeval.load_or_train_judge("digits", data_dir=data_dir, seed=0)
  assert loaded_accuracy == accuracy and loaded.config == judge.config
  x = _floats(test["image"][:50])
  np.testing.assert_array_equal(jeval.judge_logits(loaded, x), jeval.judge_logits(judge, x))


def test_judge_cache_key_and_corrupt_cache(digits):
  data_dir, _, _ = digits
  default = jeval.judge_cache_path("digits", data_dir=data_dir)
  short = jeval.judge_cache_path("digits", data_dir=data_dir, num_steps=40)
  assert short != default and short.endswith(".npz")
  odd_name = jeval.judge_cache_path("toy2d/moons", data_dir=data_dir, seed=3)
  assert odd_name.endswith("jebm_judges/toy2d_moons_seed3.npz")
  Path(short).parent.mkdir(parents=True, exist_ok=True)
  Path(short).write_bytes(b"not an npz file")
  judge, accuracy = jeval.load_or_train_judge("digits", data_dir=data_dir, num_steps=40)
  assert judge.config.num_steps == 40 and 0 <= accuracy <= 1
  assert jeval.load_judge(short)[0].config.num_steps == 40  # Rewritten with a trained judge.
  with pytest.raises(ValueError, match="Unknown judge settings"):
    jeval.load_or_train_judge("digits", data_dir=data_dir, width=3)


def test_train_judge_is_deterministic(digits):
  _, train, test = digits
  kw = dict(num_classes=10, seed=5, num_steps=30, augment_shift=1)
  (a, acc_a), (b, acc_b) = (
    jeval.train_judge(train, test, **kw),
    jeval.train_judge(train, test, **kw),
  )
  assert acc_a == acc_b
  jax.tree.map(np.testing.assert_array_equal, a.params, b.params)


def test_judge_apis_shapes_jit_and_errors(digits_judge):
  judge, _ = digits_judge
  x = np.random.default_rng(0).random((7, 8, 8, 1)).astype(np.float32)
  logits = jeval.judge_logits(judge, x, batch_size=3)
  feats = jeval.judge_features(judge, x, batch_size=3)
  assert logits.shape == (7, 10) and feats.shape == (7, judge.config.hidden)
  np.testing.assert_allclose(jax.jit(jeval.judge_logits)(judge, x), logits, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(
    jeval.judge_logits(judge, (x * 255).round().astype(np.uint8)),
    jeval.judge_logits(judge, (x * 255).round() / 255),
    atol=1e-5,
  )
  with pytest.raises(ValueError, match=r"\[N, 8, 8, 1\]"):
    jeval.judge_logits(judge, np.zeros((2, 28, 28, 1), np.float32))
  with pytest.raises(ValueError, match="labels"):
    jeval.train_judge(
      {"image": np.zeros((4, 8, 8, 1), np.uint8), "label": np.full(4, 10)},
      {"image": np.zeros((1, 8, 8, 1), np.uint8), "label": np.zeros(1)},
      num_classes=10,
    )
  with pytest.raises(ValueError, match="Unknown judge settings"):
    jeval.judge_config((8, 8, 1), 10, width=3)


def test_default_judge_configs():
  small = jeval.default_judge_config((8, 8, 1), 10)
  assert small.features == (32, 64) and small.strides == (1, 2)
  mnist = jeval.default_judge_config((28, 28, 1), 10)
  assert mnist.strides == (2, 2) and mnist.num_steps == 1500
  cifar = jeval.default_judge_config((32, 32, 3), 10)
  assert cifar.features == (64, 128) and cifar.hidden == 256
  assert len(jeval.default_judge_config((64, 64, 3), 10).features) == 3


# --- Sample quality -----------------------------------------------------------------------------


def test_sample_quality_of_real_images_vs_noise(digits, digits_judge):
  _, train, test = digits
  judge, judge_accuracy = digits_judge
  real = _floats(test["image"])
  kid = dict(kid_subset_size=100, kid_num_subsets=10)
  # The test set judged as "samples" conditioned on their labels: exactly the judge's accuracy.
  report = _json_ok(jeval.sample_quality(real, test["label"], real, judge, **kid))
  assert report["judge_accuracy"] == judge_accuracy
  assert report["fid_judge"] == pytest.approx(0.0, abs=1e-6)
  assert sum(report["judge_class_histogram"]) == 300 and len(report["judge_class_histogram"]) == 10
  assert report["judge_class_entropy"] > 0.95 * np.log(10)
  assert report["judge_inception_score_mean"] > 5
  # Real training images against the test set: small FID and KID; uniform noise: large.
  good = jeval.sample_quality(
    _floats(train["image"][:300]), train["label"][:300], real, judge, **kid
  )
  noise = np.random.default_rng(0).random((300, 8, 8, 1)).astype(np.float32)
  bad = _json_ok(jeval.sample_quality(noise, None, real, judge, **kid))
  assert good["judge_accuracy"] >= 0.95 and "judge_accuracy" not in bad
  assert bad["fid_judge"] > 10 * good["fid_judge"]
  assert bad["kid_judge_mean"] > 10 * max(good["kid_judge_mean"], good["kid_judge_std"])
  assert bad["judge_class_entropy"] < good["judge_class_entropy"]


def test_sample_quality_with_a_user_feature_fn(digits_judge, tmp_path, monkeypatch):
  judge, _ = digits_judge
  (tmp_path / "my_features.py").write_text(
    "import numpy as np\n"
    "CALLS = []\n"
    "def row_means(images):\n"
    "  CALLS.append(len(images))\n"
    "  return np.asarray(images).mean(axis=2).reshape(len(images), -1)\n"
  )
  monkeypatch.syspath_prepend(str(tmp_path))
  feature_fn = jeval.load_feature_fn("my_features:row_means")
  rng = np.random.default_rng(1)
  samples, real = rng.random((40, 8, 8, 1)), rng.random((30, 8, 8, 1))
  report = _json_ok(
    jeval.sample_quality(
      samples,
      None,
      real,
      judge,
      feature_fn=feature_fn,
      kid_subset_size=20,
      kid_num_subsets=3,
      batch_size=16,
    )
  )
  assert {"fid_user", "kid_user_mean", "kid_user_std"} <= set(report)
  assert report["fid_user"] > 0
  import my_features

  assert max(my_features.CALLS) <= 16  # Called in batches.


def test_load_feature_fn_specs_and_errors(tmp_path, monkeypatch):
  path = tmp_path / "feats.py"
  path.write_text("VALUE = 3\nclass Net:\n  @staticmethod\n  def features(x):\n    return x\n")
  assert jeval.load_feature_fn(f"{path}:Net.features")(5) == 5
  monkeypatch.syspath_prepend(str(tmp_path))
  assert jeval.load_feature_fn("feats:Net.features")(6) == 6
  assert jeval.load_feature_fn("numpy:mean") is np.mean
  with pytest.raises(ValueError, match="package.module:function"):
    jeval.load_feature_fn("feats.Net.features")
  with pytest.raises(ImportError, match="no_such_module_jebm"):
    jeval.load_feature_fn("no_such_module_jebm:f")
  with pytest.raises(ImportError, match="no file"):
    jeval.load_feature_fn(str(tmp_path / "missing.py") + ":f")
  with pytest.raises(AttributeError, match="missing"):
    jeval.load_feature_fn("feats:missing")
  with pytest.raises(TypeError, match="not a callable"):
    jeval.load_feature_fn("feats:VALUE")
  with pytest.raises(ValueError, match=r"features \[n, D\]"):
    jeval.apply_feature_fn(lambda x: x.reshape(-1), np.zeros((3, 2, 2, 1)))


# --- The judge on real MNIST (developers and CI have the IDX files) -----------------------------


@pytest.mark.slow
def test_judge_reaches_97_percent_on_real_mnist(tmp_path):
  if not REAL_MNIST_DIR.is_dir():
    pytest.skip(
      f"real MNIST IDX files not found at {REAL_MNIST_DIR} (only developers and CI have them)"
    )
  start = time.time()
  judge, accuracy = jeval.load_or_train_judge("mnist", data_dir=tmp_path, manual_dir=REAL_MNIST_DIR)
  print(f"MNIST judge: test accuracy {accuracy:.4f} in {time.time() - start:.1f} s")
  assert accuracy > 0.97 and judge.config.image_shape == (28, 28, 1)
