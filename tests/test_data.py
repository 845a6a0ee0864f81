"""Tests of jebm.data: builders prepared into tmp dirs, loading errors, batching, dequantisation."""

import contextlib
import gzip
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds

import jebm.data as jd
from jebm.data.builders import digits_split
from jebm.data.builders.base import JebmBuilder

from conftest import VARIABLE_SIZES, smooth_image

REPO = Path(__file__).resolve().parents[1]
REAL_MNIST_DIRS = (REPO.parent / "shared" / "data" / "mnist", Path("/work/shared/data/mnist"))


@pytest.fixture(autouse=True)
def _no_data_env(monkeypatch):
  """Tests pass data_dir / manual_dir explicitly; the user's environment must not leak in."""
  for var in ("JEBM_MNIST_DIR", "JEBM_DATA_DIR", "TFDS_DATA_DIR"):
    monkeypatch.delenv(var, raising=False)


# --- digits -------------------------------------------------------------------------------------


def test_digits_round_trip(tmp_path):
  from sklearn.datasets import load_digits

  train = jd.arrays("digits", "train", data_dir=tmp_path)
  test = jd.arrays("digits", "test", data_dir=tmp_path)
  assert train["image"].shape == (1497, 8, 8, 1) and test["image"].shape == (300, 8, 8, 1)
  assert train["image"].dtype == np.uint8 and train["label"].dtype == np.int32
  assert set(np.unique(train["label"])) == set(range(10)) == set(np.unique(test["label"]))
  assert train["image"].max() == 255
  # The stored split is the documented one, in sklearn order within each split.
  digits = load_digits()
  train_idx, test_idx = digits_split(digits.target)
  np.testing.assert_array_equal(test["label"], digits.target[test_idx])
  np.testing.assert_array_equal(
    train["image"][..., 0], np.round(digits.images[train_idx] * 255 / 16).astype(np.uint8)
  )
  # Readable through plain TFDS too, and a fresh prepare elsewhere gives identical data.
  assert len(tfds.data_source("jebm_digits", split="test", data_dir=tmp_path)) == 300
  again = jd.arrays("digits", "test", data_dir=tmp_path / "other")
  np.testing.assert_array_equal(again["image"], test["image"])


def test_digits_split_is_stratified_and_fixed():
  labels = np.repeat(np.arange(10), 180)[np.random.default_rng(1).permutation(1800)]
  train_idx, test_idx = digits_split(labels)
  assert len(test_idx) == 300 and len(train_idx) == 1500
  assert np.intersect1d(train_idx, test_idx).size == 0
  np.testing.assert_array_equal(np.sort(np.concatenate([train_idx, test_idx])), np.arange(1800))
  np.testing.assert_array_equal(np.bincount(labels[test_idx]), np.full(10, 30))
  np.testing.assert_array_equal(digits_split(labels)[1], test_idx)


# --- mnist --------------------------------------------------------------------------------------


def _fake_mnist(directory, n_train=20, n_test=10, seed=0):
  """Writes tiny IDX files, mixing gzip / plain and '-idx' / '.idx' spellings."""
  rng = np.random.default_rng(seed)
  data = {
    "train": (
      rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
      rng.integers(0, 10, n_train, dtype=np.uint8),
    ),
    "test": (
      rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
      rng.integers(0, 10, n_test, dtype=np.uint8),
    ),
  }
  directory.mkdir(parents=True, exist_ok=True)
  jd.write_idx(directory / "train-images-idx3-ubyte.gz", data["train"][0])
  jd.write_idx(directory / "train-labels.idx1-ubyte", data["train"][1])
  jd.write_idx(directory / "t10k-images.idx3-ubyte", data["test"][0])
  jd.write_idx(directory / "t10k-labels-idx1-ubyte.gz", data["test"][1])
  return data


def test_mnist_from_fake_idx_files(tmp_path, monkeypatch):
  expected = _fake_mnist(tmp_path / "manual")
  for split in ("train", "test"):
    got = jd.arrays("mnist", split, data_dir=tmp_path / "data", manual_dir=tmp_path / "manual")
    images, labels = expected[split]
    assert got["image"].shape == images.shape + (1,) and got["image"].dtype == np.uint8
    np.testing.assert_array_equal(got["image"][..., 0], images)
    np.testing.assert_array_equal(got["label"], labels)
  # Once prepared, no manual dir is needed; the env var works as the manual dir.
  assert len(jd.load("mnist", "test", data_dir=tmp_path / "data")) == 10
  monkeypatch.setenv("JEBM_MNIST_DIR", str(tmp_path / "manual"))
  assert len(jd.load("mnist", "train", data_dir=tmp_path / "data2")) == 20


def test_mnist_missing_files_fail_fast(tmp_path):
  start = time.monotonic()
  with pytest.raises(FileNotFoundError, match="JEBM_MNIST_DIR"):
    jd.load("mnist", "train", data_dir=tmp_path / "data")
  _fake_mnist(tmp_path / "manual")
  (tmp_path / "manual" / "t10k-labels-idx1-ubyte.gz").unlink()
  with pytest.raises(FileNotFoundError) as info:
    jd.load("mnist", "train", data_dir=tmp_path / "data", manual_dir=tmp_path / "manual")
  message = str(info.value)
  assert "t10k-labels-idx1-ubyte" in message and "JEBM_MNIST_DIR" in message
  assert "manual_dir" in message and "train-images-idx3-ubyte[" not in message
  assert time.monotonic() - start < 5


def test_corrupt_idx_files(tmp_path):
  good = jd.write_idx(tmp_path / "x-idx3-ubyte", np.zeros((3, 28, 28), np.uint8))
  np.testing.assert_array_equal(jd.read_idx(good), np.zeros((3, 28, 28), np.uint8))
  bad_magic = tmp_path / "bad"
  bad_magic.write_bytes(b"\x12\x34\x08\x03" + bytes(16))
  with pytest.raises(ValueError, match="magic"):
    jd.read_idx(bad_magic)
  truncated = tmp_path / "truncated.gz"
  truncated.write_bytes(gzip.compress(good.read_bytes()[:-5]))
  with pytest.raises(ValueError, match="truncated"):
    jd.read_idx(truncated)
  with pytest.raises(ValueError, match="dimensions"):
    jd.read_idx(good, ndim=1)
  # Through the builder: a corrupt file in the manual dir is a clear ValueError, not a hang.
  _fake_mnist(tmp_path / "manual")
  (tmp_path / "manual" / "t10k-images.idx3-ubyte").write_bytes(b"\x00\x00\x08\x03garbage")
  with pytest.raises(ValueError, match="t10k-images"):
    jd.load("mnist", "test", data_dir=tmp_path / "data", manual_dir=tmp_path / "manual")


def test_real_mnist(tmp_path):
  found = [d for d in REAL_MNIST_DIRS if (d / "train-images.idx3-ubyte.gz").exists()]
  if not found:
    pytest.skip(
      f"real MNIST not at {REAL_MNIST_DIRS[0]} (nor {REAL_MNIST_DIRS[1]}); see the"
      " README of shared/data/mnist, or pass manual_dir= / set JEBM_MNIST_DIR"
    )
  train = jd.arrays("mnist", "train", data_dir=tmp_path, manual_dir=found[0])
  assert len(jd.load("mnist", "test", data_dir=tmp_path)) == 10_000
  assert train["image"].shape == (60_000, 28, 28, 1)
  np.testing.assert_array_equal(
    np.bincount(train["label"]), [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
  )
  np.testing.assert_array_equal(train["label"][:10], [5, 0, 4, 1, 9, 2, 1, 3, 1, 4])
  assert abs(train["image"].mean() - 33.318) < 1e-3


# --- other names --------------------------------------------------------------------------------


def test_unknown_dataset_and_split(tmp_path):
  with pytest.raises(ValueError, match="digits"):
    jd.load("no_such_dataset", "train", data_dir=tmp_path)
  with pytest.raises(ValueError, match="toy2d/8gaussians"):
    jd.load("toy2d/spirals", "train", data_dir=tmp_path)
  with pytest.raises(ValueError, match="Unknown split"):
    jd.load("digits", "validation", data_dir=tmp_path)


def test_unprepared_tfds_dataset_fails_fast_without_download(tmp_path):
  script = textwrap.dedent(f"""
      import jebm.data as jd
      for name in ("cifar10", "downsampled_imagenet/32x32"):
        try:
          jd.load(name, "train", data_dir={str(tmp_path)!r})
        except FileNotFoundError as e:
          print(e)
        else:
          raise SystemExit(name + " loaded from an empty data dir")
      """)
  start = time.monotonic()
  result = subprocess.run(
    [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=REPO
  )
  assert result.returncode == 0, result.stderr[-2000:]
  assert f"tfds build cifar10 --file_format=array_record --data_dir={tmp_path}" in result.stdout
  assert "tfds build downsampled_imagenet/32x32" in result.stdout
  assert "TensorFlow" in result.stdout
  assert time.monotonic() - start < 30
  assert not list(tmp_path.rglob("*.array_record*"))


class FakeExternalImages(JebmBuilder):
  """Stands for a TFDS registry dataset that a user prepared with `tfds build`."""

  VERSION = tfds.core.Version("1.0.0")

  def _info(self):
    return tfds.core.DatasetInfo(
      builder=self,
      features=tfds.features.FeaturesDict(
        {
          "image": tfds.features.Tensor(shape=(4, 4, 3), dtype=np.uint8),
          "label": tfds.features.ClassLabel(num_classes=3),
        }
      ),
    )

  def _split_generators(self, dl_manager):
    return {"train": self._generate_examples(12)}

  def _generate_examples(self, n):
    for i in range(n):
      yield i, {"image": np.full((4, 4, 3), i, np.uint8), "label": i % 3}


def test_prepared_tfds_dataset_is_read(tmp_path):
  FakeExternalImages(data_dir=tmp_path).download_and_prepare(
    download_config=tfds.download.DownloadConfig(try_download_gcs=False)
  )
  got = jd.arrays("fake_external_images", "train", data_dir=tmp_path)
  assert got["image"].shape == (12, 4, 4, 3) and got["label"].dtype == np.int32
  assert sorted(got["image"][:, 0, 0, 0]) == list(range(12))


def test_resize_and_center_crop_known_answers():
  rng = np.random.default_rng(0)
  wide = rng.integers(0, 256, (8, 20, 3), dtype=np.uint8)
  np.testing.assert_array_equal(jd.resize_and_center_crop(wide, 8), wide[:, 6:14])  # no scaling
  tall = rng.integers(0, 256, (9, 4, 1), dtype=np.uint8)
  np.testing.assert_array_equal(jd.resize_and_center_crop(tall, 4), tall[2:6])
  halves = np.zeros((40, 100, 2), np.uint8)  # left half 0, right half 255 -> 10 x 25, crop 7:17
  halves[:, 50:] = 255
  got = jd.resize_and_center_crop(halves, 10)
  assert got.shape == (10, 10, 2) and got.dtype == np.uint8
  np.testing.assert_array_equal(got[:, :4], 0)
  np.testing.assert_array_equal(got[:, 6:], 255)
  smooth = smooth_image(rng, (60, 90)).astype(float)  # 6x shrink to 10 x 15, crop 2:12: block means
  want = smooth[:, 12:72].reshape(10, 6, 10, 6, 3).mean(axis=(1, 3))
  got = jd.resize_and_center_crop(smooth.astype(np.uint8), 10)
  assert np.abs(got - want)[1:-1, 1:-1].max() <= 1.5  # inside: the filter is not cut by the border


def test_images_of_varying_size_read_resized_and_cropped(variable_size_images):
  raw = jd.load("variable_size_images", "train", data_dir=variable_size_images)
  assert {raw[i]["image"].shape[:2] for i in range(6)} == set(VARIABLE_SIZES)
  with pytest.raises(jd.DataError, match=r"differ in shape.*'NAME@SIZE'"):
    jd.arrays("variable_size_images", "train", data_dir=variable_size_images)
  with pytest.raises(jd.DataError, match="differ in shape"):
    next(jd.stream(raw, 6, seed=0))
  got = jd.arrays("variable_size_images@16", "train", data_dir=variable_size_images)
  assert got["image"].shape == (6, 16, 16, 3) and got["image"].dtype == np.uint8
  for i in range(6):
    np.testing.assert_array_equal(got["image"][i], jd.resize_and_center_crop(raw[i]["image"], 16))
    assert got["label"][i] == raw[i]["label"]
  source = jd.load("variable_size_images@16", "train", data_dir=variable_size_images)
  want = jd.batches(got, 4, seed=2, start_step=3)
  with contextlib.closing(jd.stream(source, 4, seed=2, start_step=3, num_workers=1)) as streamed:
    for _ in range(3):
      a, b = next(want), next(streamed)
      np.testing.assert_array_equal(a["image"], b["image"])
      np.testing.assert_array_equal(a["label"], b["label"])
  for bad in ("variable_size_images@0", "mnist@x", "mnist@-3"):
    with pytest.raises(ValueError, match="positive int"):
      jd.check_dataset_name(bad)
  jd.check_dataset_name("imagenet2012@128")
  with pytest.raises(FileNotFoundError, match="tfds build imagenet2012 --file_format"):
    jd.load(
      "imagenet2012@128", "train", data_dir=variable_size_images
    )  # the preset's name, not prepared


def test_default_data_dir(monkeypatch, tmp_path):
  assert jd.default_data_dir() == str(Path("~/tensorflow_datasets").expanduser())
  monkeypatch.setenv("JEBM_DATA_DIR", str(tmp_path))
  assert jd.default_data_dir() == str(tmp_path)


# --- toy2d --------------------------------------------------------------------------------------


def test_toy2d_builder(tmp_path):
  assert len(jd.load("toy2d/8gaussians", "train", data_dir=tmp_path)) == 50_000
  test = jd.arrays("toy2d/8gaussians", "test", data_dir=tmp_path)
  assert test["image"].shape == (5000, 2) and test["image"].dtype == np.float32
  centres = jd.toy2d.centers("8gaussians")
  distance = np.linalg.norm(test["image"] - centres[test["label"]], axis=1)
  assert distance.max() < 0.6 and abs(distance.mean() - 0.1 * np.sqrt(np.pi / 2)) < 0.01
  np.testing.assert_allclose(np.linalg.norm(centres, axis=1), 2.0, rtol=1e-6)
  points, labels = jd.toy2d.sample("8gaussians", 5000, seed=1)
  np.testing.assert_array_equal(points, test["image"])
  np.testing.assert_array_equal(labels, test["label"])


@pytest.mark.parametrize("name", jd.toy2d.NAMES)
def test_toy2d_samplers(name):
  points, labels = jd.toy2d.sample(name, 4000, seed=3)
  assert points.shape == (4000, 2) and points.dtype == np.float32 and labels.dtype == np.int32
  np.testing.assert_array_equal(points, jd.toy2d.sample(name, 4000, seed=3)[0])
  assert not np.array_equal(points, jd.toy2d.sample(name, 4000, seed=4)[0])
  assert np.abs(points).max() < 2.6 and np.abs(points.mean(0)).max() < 0.1
  if name == "checkerboard":
    assert np.all((np.floor(points[:, 0]) + np.floor(points[:, 1])) % 2 == 0)
  if name == "rings":
    radius = np.linalg.norm(points, axis=1)
    assert np.min(np.abs(radius[:, None] - [0.5, 1.0, 1.5, 2.0]), axis=1).max() < 0.5
  if name != "8gaussians":
    assert not labels.any()


# --- batching -----------------------------------------------------------------------------------


def _data(n=103):
  return {"image": np.arange(n * 2, dtype=np.uint8).reshape(n, 2), "label": np.arange(n)}


def _take(stream, k):
  return [next(stream)["label"] for _ in range(k)]


def test_batches_deterministic_and_reshuffled():
  data = _data()  # 103 examples, batch 10: 10 batches per epoch, 3 dropped.
  first = _take(jd.batches(data, 10, seed=0), 20)
  np.testing.assert_array_equal(first, _take(jd.batches(data, 10, seed=0), 20))
  assert not np.array_equal(first[:10], _take(jd.batches(data, 10, seed=1), 10))
  epoch0, epoch1 = np.concatenate(first[:10]), np.concatenate(first[10:])
  assert len(set(epoch0)) == 100 and not np.array_equal(epoch0, epoch1)
  batch = next(jd.batches(data, 10, seed=0))
  np.testing.assert_array_equal(batch["image"][:, 0], (2 * batch["label"]).astype(np.uint8))


def test_batches_resume_and_epochs():
  data = _data()
  full = _take(jd.batches(data, 10, seed=5), 25)
  np.testing.assert_array_equal(full[13:], _take(jd.batches(data, 10, seed=5, start_step=13), 12))
  assert len(list(jd.batches(data, 10, seed=0, num_epochs=2))) == 20
  last = list(jd.batches(data, 10, seed=0, num_epochs=1, drop_remainder=False))
  assert len(last) == 11 and len(last[-1]["label"]) == 3
  np.testing.assert_array_equal(np.sort(np.concatenate([b["label"] for b in last])), np.arange(103))
  ordered = next(jd.batches(data, 10, seed=0, shuffle=False, start_step=11))
  np.testing.assert_array_equal(ordered["label"], np.arange(10, 20))
  with pytest.raises(ValueError, match="exceeds"):
    next(jd.batches(data, 200, seed=0))


def test_batches_process_sharding():
  data = _data()
  global_stream = _take(jd.batches(data, 8, seed=2, process_index=0, process_count=1), 30)
  shards = [
    _take(jd.batches(data, 4, seed=2, process_index=p, process_count=2), 30) for p in range(2)
  ]
  for step in range(30):
    a, b = shards[0][step], shards[1][step]
    assert len(a) == len(b) == 4 and not set(a) & set(b)
    np.testing.assert_array_equal(np.concatenate([a, b]), global_stream[step])
  default = next(jd.batches(data, 4, seed=2))  # jax.process_index() == 0 of 1 here.
  np.testing.assert_array_equal(default["label"], global_stream[0][:4])


def test_stream_reads_the_same_batches_as_the_in_memory_loader():
  """grain's stream over a random-access source gives batches' batches: deterministic from the
  seed, resumed mid-epoch, per process shards (which batches' own tests pin down)."""
  data = _data()
  records = [{"image": data["image"][i], "label": data["label"][i]} for i in range(103)]
  for start, index, count in ((0, 0, 1), (13, 0, 1), (7, 1, 2)):
    want = jd.batches(data, 4, seed=3, start_step=start, process_index=index, process_count=count)
    got = jd.stream(records, 4, seed=3, start_step=start, process_index=index, process_count=count)
    for _ in range(30):  # past the end of the first epochs
      a, b = next(want), next(got)
      assert set(b) == {"image", "label"} and b["label"].dtype == np.int32
      np.testing.assert_array_equal(a["image"], b["image"])
      np.testing.assert_array_equal(a["label"], b["label"])
    got.close()
  unlabelled = jd.stream([{"image": r["image"]} for r in records], 4, seed=3)
  np.testing.assert_array_equal(next(unlabelled)["label"], np.zeros(4, np.int32))
  with pytest.raises(ValueError, match="exceeds the 103 examples"):
    jd.stream(records, 60, seed=0, process_index=0, process_count=2)


def test_stream_reads_a_tfds_source_in_worker_processes(tmp_path):
  source = jd.load("digits", "train", data_dir=tmp_path)
  want = jd.batches(jd.source_to_arrays(source), 32, seed=1, start_step=40)
  with contextlib.closing(jd.stream(source, 32, seed=1, start_step=40, num_workers=1)) as got:
    for _ in range(3):
      a, b = next(want), next(got)
      assert b["image"].shape == (32, 8, 8, 1) and b["image"].dtype == np.uint8
      np.testing.assert_array_equal(a["image"], b["image"])
      np.testing.assert_array_equal(a["label"], b["label"])


# --- dequantisation -----------------------------------------------------------------------------


def test_dequantize():
  images = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1).repeat(64, axis=0)
  x = jax.jit(jd.dequantize)(jax.random.key(0), images)
  assert x.dtype == jnp.float32 and x.shape == images.shape
  assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
  clean = jd.to_float(images)
  assert float(jnp.abs(x - clean).max()) <= 1 / 255
  np.testing.assert_array_equal(jnp.floor(x * 256), images)  # (x + u)/256, u in [0, 1).
  assert float(jnp.std(x * 256 - images)) == pytest.approx(np.sqrt(1 / 12), rel=0.05)
  assert not jnp.array_equal(x, jd.dequantize(jax.random.key(1), images))
  assert float(clean.max()) == 1.0 and float(clean.min()) == 0.0


def test_crop_flip_moves_each_image_by_at_most_the_padding_and_flips_half():
  """A single bright pixel per image: after crop_flip it sits within 4 pixels of where it was
  (or of its mirror image), or has left the frame; about half the images are flipped."""
  images = np.zeros((400, 16, 16, 1), np.float32)
  images[:, 5, 2] = 1.0
  out = np.asarray(jax.jit(jd.crop_flip)(jax.random.key(0), images))
  assert out.shape == images.shape and out.dtype == images.dtype
  flipped = 0
  for image in out[..., 0]:
    rows, cols = np.nonzero(image)
    assert len(rows) <= 1 and image.sum() in (0.0, 1.0)
    if len(rows):
      assert abs(rows[0] - 5) <= 4
      plain, mirrored = abs(cols[0] - 2) <= 4, abs(cols[0] - 13) <= 4
      assert plain or mirrored
      flipped += mirrored
  assert 120 < flipped < 280  # the pixel stays in the frame in most images either way
  np.testing.assert_array_equal(jd.random_crop(jax.random.key(1), images, 0), images)
