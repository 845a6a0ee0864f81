"""The training loader at scale: grain streaming against the in-memory loader.

  python -m benchmarks.loader [--data_dir DIR] [--num_images 1000000] [--steps 200] [--reps 20]

1. Speed: one CIFAR-sized training step (``ConvEnergy`` 64-128-256, batch 128, 60 Langevin steps,
   the ``cifar_train`` workload) fed by ``jebm.data.batches`` from memory (10,000 generated
   images) and by ``jebm.data.stream`` (grain, reading threads) from the ArrayRecord files of
   ``--num_images`` generated images, the two interleaved round-robin in one process; the ratio
   is the loader's cost.
2. Memory: peak resident memory of ``experiments.trainer.train_and_evaluate`` for ``--steps``
   steps on ``--num_images`` generated images, with ``--loader=grain`` and with
   ``--loader=memory``, each in a fresh process (so each peak is its own). The network is small
   (``ConvEnergy`` 32-64, 10 Langevin steps, batch 128, a replay buffer of 10,000) so that the
   runs take a minute; the data, not the model, is what differs.

The dataset (``synthetic_images``, uniform random uint8 pixels and labels from a seed) is
generated once into ``--data_dir`` (3 GB for a million images).
"""

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np
import tensorflow_datasets as tfds
from tensorflow_datasets.core import shuffle as tfds_shuffle

from jebm.data.builders.base import JebmBuilder

HERE = os.path.dirname(os.path.abspath(__file__))
SHAPE = (32, 32, 3)


class SyntheticImages(JebmBuilder):
  """Uniform random 32x32x3 uint8 images with labels 0-9; config ``n<N>`` has N train images."""

  VERSION = tfds.core.Version("1.0.0")
  BUILDER_CONFIGS = [
    tfds.core.BuilderConfig(name=f"n{n}") for n in (1000, 10_000, 100_000, 1_000_000)
  ]

  def _info(self):
    return self._labelled_image_info(SHAPE, 10, homepage="", citation="")

  def _split_generators(self, dl_manager):
    del dl_manager
    return {"train": self._generate_examples(int(self.builder_config.name[1:]))}

  def _generate_examples(self, num):
    chunk = 10_000
    for start in range(0, num, chunk):
      rng = np.random.default_rng([0, start])
      size = min(chunk, num - start)
      images = rng.integers(0, 256, (size, *SHAPE), dtype=np.uint8)
      labels = rng.integers(0, 10, size)
      for i in range(size):
        yield start + i, {"image": images[i], "label": int(labels[i])}


def prepare(data_dir: str, num_images: int) -> str:
  """Generates the dataset once; returns its TFDS name."""
  name = f"synthetic_images/n{num_images}"
  builder = tfds.builder(name, data_dir=data_dir)
  if not builder.is_prepared():
    start = time.time()
    # TFDS spills examples over 1 GB to disk through TensorFlow, which jebm does not install:
    # generation keeps them in memory instead (the measured runs read the files).
    tfds_shuffle.MAX_MEM_BUFFER_SIZE = 16 << 30
    builder.download_and_prepare()
    print(f"generated {name} in {time.time() - start:.0f} s", file=sys.stderr)
  return name


def speed(data_dir: str, name: str, reps: int):
  """Median seconds of a cifar_train step fed from memory and from grain, interleaved."""
  import jax

  from benchmarks.timing import Task, round_robin
  from benchmarks.workloads import all_workloads
  from jebm import data, optim, train
  from jebm.xla_flags import FAST_CPU_OPTIONS

  workload = next(w for w in all_workloads(False, ["cifar_train"]))
  model, config = workload.model(), workload.train_config()
  optimizer = optim.igebm_adam(1e-4)
  source = data.load(name, "train", data_dir=data_dir)
  arrays = data.source_to_arrays(data.load("synthetic_images/n10000", "train", data_dir=data_dir))
  step = jax.jit(train.make_train_step(model, optimizer, config), donate_argnums=(0,))
  state = train.create_train_state(jax.random.key(0), model, optimizer, config, SHAPE)
  step = step.lower(state, next(data.batches(arrays, workload.batch, seed=0)))
  step = step.compile(compiler_options=FAST_CPU_OPTIONS)  # as the launchers run it
  tasks = []
  for loader, batches in (
    ("memory", data.batches(arrays, workload.batch, seed=0)),
    ("grain", data.stream(source, workload.batch, seed=0)),
  ):
    holder = {"state": train.create_train_state(jax.random.key(0), model, optimizer, config, SHAPE)}

    def one(holder=holder, batches=batches):
      start = time.perf_counter()
      holder["state"], metrics = step(holder["state"], next(batches))
      jax.block_until_ready((holder["state"], metrics))
      return time.perf_counter() - start

    tasks.append(Task(loader, "cifar_train", workload.sample_steps, prepare=one, run=one))
  for task in tasks:
    task.prepare()
  round_robin(tasks, reps, lambda m: None)
  medians = {t.impl: t.summary()["median_s"] for t in tasks}
  return {**medians, "grain_over_memory": medians["grain"] / medians["memory"]}


def peak_memory(data_dir: str, name: str, steps: int, loader: str):
  """Peak resident memory (GiB) and seconds of a fresh process training ``steps`` steps."""
  code = f"""
import resource, sys, time
import jebm  # first, as in the launchers: the XLA options apply
sys.path.insert(0, {os.path.dirname(HERE)!r})
import benchmarks.loader  # registers synthetic_images
from experiments import trainer
from experiments.configs import presets
import dataclasses
config = dataclasses.replace(presets.PRESETS["cifar10_uncond"], dataset={name!r}, model="conv",
  features=(32, 64), activation="swish", spectral_norm=False, langevin_steps=10,
  num_steps={steps}, batch_size=128, buffer_capacity=10000, checkpoint_every={steps},
  sample_every={steps}, log_every=50, eval_langevin_steps=1)
start = time.time()
trainer.train_and_evaluate(config, sys.argv[1], data_dir={data_dir!r}, loader={loader!r})
print(time.time() - start, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""
  workdir = os.path.join(data_dir, f"run_{loader}_{time.time_ns()}")
  out = subprocess.run(
    [sys.executable, "-c", code, workdir], capture_output=True, text=True, check=False
  )
  if out.returncode:
    raise RuntimeError(out.stderr[-3000:])
  seconds, kib = out.stdout.split()[-2:]
  return {"seconds": float(seconds), "peak_gib": int(kib) / 2**20}


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--data_dir", default=os.path.join(HERE, ".loader-data"))
  parser.add_argument("--num_images", type=int, default=1_000_000)
  parser.add_argument("--steps", type=int, default=200)
  parser.add_argument("--reps", type=int, default=20)
  parser.add_argument("--skip", default="", help="comma-separated parts to skip: speed,memory")
  args = parser.parse_args(argv)
  skip = set(filter(None, args.skip.split(",")))
  prepare(args.data_dir, 10_000)
  name = prepare(args.data_dir, args.num_images)
  report = {"num_images": args.num_images, "steps": args.steps}
  if "speed" not in skip:
    report["speed"] = speed(args.data_dir, name, args.reps)
    print(json.dumps(report["speed"]), flush=True)
  if "memory" not in skip:
    for loader in ("grain", "memory"):
      report[f"memory_{loader}"] = peak_memory(args.data_dir, name, args.steps, loader)
      print(loader, json.dumps(report[f"memory_{loader}"]), flush=True)
  print(json.dumps(report, indent=1))


if __name__ == "__main__":
  main()
