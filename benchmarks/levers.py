"""Side-by-side measurements of the levers tried on jebm's Langevin chain (one process,
round-robin repetitions, ratios to plain jebm), for benchmarks/README.md.

  python -m benchmarks.levers [--workload mnist_sample] [--steps 10] [--reps 7] [--out FILE]

Levers, against a straightforward jit + fori_loop chain (XLA's own conv gradient, default XLA
flags): XLA CPU compiler options (per compilation, so they compare inside one process), chunking
the chains, conv lowerings (im2col, col2im-only, NCHW, ``jebm.ops.conv2d``), batch vs per-example
input gradients, scan unrolling on the 2-D workloads (128 and 16 wide), donation of the train
state, and one bound: the same chain with a cheaper activation (ReLU).
"""

import argparse
import contextlib
import dataclasses
import json
import sys
from typing import Callable, Dict, List

import jax
import jax.numpy as jnp
from jax import lax

from benchmarks import jebm_impl, swap_conv
from benchmarks.timing import Task, round_robin, timed
from benchmarks.workloads import Workload, all_workloads
from jebm import langevin, ops
from jebm.energy import energy_and_grad, from_model
from jebm.xla_flags import FAST_CPU_OPTIONS

ONEDNN = {"xla_cpu_use_onednn": True}
NO_YNN = {"xla_cpu_experimental_ynn_fusion_type": ""}
OPTIONS = {
  "XLA option xla_cpu_use_onednn": ONEDNN,
  "XLA option: no YNNPACK fusions": NO_YNN,
  "XLA options: oneDNN, no YNNPACK (jebm's FAST_CPU_OPTIONS)": FAST_CPU_OPTIONS,
  "XLA option xla_cpu_enable_fast_math": {"xla_cpu_enable_fast_math": True},
}


def patches_conv(x, kernel, stride):
  """im2col: the k*k shifted strided slices concatenated, then one matmul."""
  size, _, c_in, c_out = kernel.shape
  batch, height, width, _ = x.shape
  out_h, pad_h = ops._same_padding(height, size, stride)
  out_w, pad_w = ops._same_padding(width, size, stride)
  xp = jnp.pad(x, ((0, 0), pad_h, pad_w, (0, 0)))
  cols = [
    lax.slice(
      xp,
      (0, i, j, 0),
      (batch, i + (out_h - 1) * stride + 1, j + (out_w - 1) * stride + 1, c_in),
      (1, stride, stride, 1),
    )
    for i in range(size)
    for j in range(size)
  ]
  return jnp.concatenate(cols, axis=-1) @ kernel.reshape(-1, c_out)


def col2im_conv(x, kernel, stride):
  """XLA's convolution whose input gradient is matmul + col2im in every layer (strided too)."""

  @jax.custom_vjp
  def conv(x, kernel):
    return ops.xla_conv(x, kernel, stride)

  def fwd(x, kernel):
    return conv(x, kernel), (x, kernel)

  def bwd(res, dy):
    x, kernel = res
    dx = ops._col2im_input_grad(dy, kernel, x.shape, stride)
    return dx, jax.vjp(lambda k: ops.xla_conv(x, k, stride), kernel)[1](dy)[0]

  conv.defvjp(fwd, bwd)
  return conv(x, kernel)


def nchw_energy(model, variables, x, y=None):
  """ConvEnergy computed in NCHW / OIHW (one transpose of the input, none after)."""
  params, act = variables["params"], jax.nn.silu
  h = jnp.transpose(x, (0, 3, 1, 2))
  for i, name in enumerate(["stem"] + [f"conv_{i}" for i in range(len(model.features))]):
    kernel = jnp.transpose(params[name]["kernel"], (3, 2, 0, 1))
    stride = 1 if i == 0 else 2
    pads = [ops._same_padding(n, 3, stride)[1] for n in h.shape[2:]]
    h = lax.conv_general_dilated(
      h, kernel, (stride, stride), pads, dimension_numbers=("NCHW", "OIHW", "NCHW")
    )
    h = act(h + params[name]["bias"][:, None, None])
  h = act(jnp.mean(h, axis=(2, 3)) @ params["dense"]["kernel"] + params["dense"]["bias"])
  return (h @ params["energy"]["kernel"] + params["energy"]["bias"])[:, 0]


def chunked(sample: Callable, chunk: int) -> Callable:
  """Runs the chains in groups of ``chunk`` with ``lax.map`` (smaller working set per step)."""

  def run(variables, rng_key, x0):
    groups = x0.reshape(-1, chunk, *x0.shape[1:])
    keys = jax.random.split(rng_key, groups.shape[0])
    out = lax.map(lambda a: sample(variables, a[0], a[1]), (keys, groups))
    return out.reshape(x0.shape)

  return run


def chain_with(workload: Workload, apply: Callable) -> Callable:
  """``(variables, key, x0) -> x`` of ``langevin.sample`` on the energy ``apply(variables, x)``."""
  config = workload.langevin_config()
  return lambda v, k, x: langevin.sample(
    k, from_model(lambda v_, x_, y=None: apply(v_, x_), v), x, config
  )[0]


def sampling_variants(workload: Workload) -> Dict[str, tuple]:
  """name -> (chain fn, compiler options); the first is the straightforward baseline."""
  model = workload.model()
  swapped = lambda conv: chain_with(
    workload, lambda v, x: swap_conv.conv_energy_apply(model, v, x, conv=conv)
  )
  plain, jebm = swapped(ops.xla_conv), chain_with(workload, model.apply)
  chunk = max(workload.batch // 4, 1)
  chunks = f"chains in {workload.batch // chunk} chunks (lax.map)"
  out = {"plain (XLA conv gradient, default flags)": (plain, {})}
  out.update({f"plain, {name}": (plain, opts) for name, opts in OPTIONS.items()})
  out[f"plain, {chunks}"] = (chunked(plain, chunk), {})
  out["NCHW convolutions"] = (chain_with(workload, lambda v, x: nchw_energy(model, v, x)), {})
  out["im2col convolutions (slices + matmul)"] = (swapped(patches_conv), {})
  out["col2im input gradients in every layer"] = (swapped(col2im_conv), {})
  out["jebm.ops.conv2d, default flags"] = (jebm, {})
  out["jebm (jebm.ops.conv2d + FAST_CPU_OPTIONS)"] = (jebm, FAST_CPU_OPTIONS)
  out[f"jebm, {chunks}"] = (chunked(jebm, chunk), FAST_CPU_OPTIONS)
  # Not a lever (another network, same variables): how much a cheaper activation would buy, i.e.
  # a bound on what fusing the elementwise passes better could still give.
  relu = dataclasses.replace(model, activation="relu")
  out["bound: jebm with ReLU instead of swish"] = (
    chain_with(workload, relu.apply),
    FAST_CPU_OPTIONS,
  )
  return out


def compiled_task(name, workload_name, steps, fn, args, options) -> Task:
  """A task running ``fn(*args)`` compiled with XLA ``options``; only the ``jebm`` variants get
  ``jebm.ops.conv2d``'s gradients (``from_model`` would otherwise give them to every variant)."""
  holder = {}

  def prepare():
    with contextlib.nullcontext() if "jebm" in name else ops.xla_conv_gradients():
      return timed(
        lambda: holder.setdefault(
          "fn", jax.jit(fn).lower(*args).compile(compiler_options=options or None)
        )
      )

  return Task(
    name,
    workload_name,
    steps,
    prepare=prepare,
    run=lambda: timed(lambda: jax.block_until_ready(holder["fn"](*args))),
  )


def sampling_tasks(workload: Workload) -> List[Task]:
  variables = jebm_impl.init_variables(workload)
  args = (variables, jax.random.key(3), jebm_impl.initial_state(workload))
  return [
    compiled_task(name, workload.name, workload.sample_steps, fn, args, opts)
    for name, (fn, opts) in sampling_variants(workload).items()
  ]


def gradient_tasks(workload: Workload) -> List[Task]:
  """One input gradient of the batch: grad of the summed energy vs vmap of per-example grads."""
  model, variables = workload.model(), jebm_impl.init_variables(workload)
  x = jebm_impl.initial_state(workload)
  batch_grad = lambda v, x: energy_and_grad(from_model(model.apply, v), x)[1]
  single = lambda v, xi: model.apply(v, xi[None])[0]
  per_example = lambda v, x: jax.vmap(jax.grad(single, argnums=1), in_axes=(None, 0))(v, x)
  name = workload.name + " (one gradient)"
  return [
    compiled_task(
      "batch gradient: grad(sum E)", name, workload.batch, batch_grad, (variables, x), {}
    ),
    compiled_task(
      "per-example gradients: vmap(grad E)", name, workload.batch, per_example, (variables, x), {}
    ),
  ]


def unrolled_chain(workload: Workload, unroll: int) -> Callable:
  """langevin.step in a hand-written lax.scan with ``unroll`` (sample does not expose it)."""
  model, config = workload.model(), workload.langevin_config()

  def run(variables, rng_key, x0):
    fn = from_model(model.apply, variables)
    body = lambda s, t: (langevin.step(jax.random.fold_in(rng_key, t), s, fn, config)[0], None)
    state = langevin.init(x0, fn)
    return lax.scan(body, state, jnp.arange(config.num_steps), unroll=unroll)[0].x

  return run


def unroll_tasks(workload: Workload) -> List[Task]:
  variables = jebm_impl.init_variables(workload)
  args = (variables, jax.random.key(3), jebm_impl.initial_state(workload))
  plain = chain_with(workload, workload.model().apply)
  return [compiled_task("jebm", workload.name, workload.sample_steps, plain, args, {})] + [
    compiled_task(
      f"lax.scan unroll={u}",
      workload.name,
      workload.sample_steps,
      unrolled_chain(workload, u),
      args,
      {},
    )
    for u in (1, 4)
  ]


def donation_tasks(workload: Workload) -> List[Task]:
  tasks = []
  for donate in (True, False):
    task = jebm_impl.train_task(workload, "jebm", donate=donate)
    task.impl = "jebm train step, state donated" if donate else "jebm train step, not donated"
    tasks.append(task)
  return tasks


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description="Side-by-side lever measurements.")
  parser.add_argument("--workload", default="mnist_sample")
  parser.add_argument("--steps", type=int, default=10, help="Langevin steps per repetition")
  parser.add_argument("--reps", type=int, default=7)
  parser.add_argument("--out", default=None)
  args = parser.parse_args(argv)
  by_name = {w.name: w for w in all_workloads()}
  conv = dataclasses.replace(by_name[args.workload], num_steps=args.steps)
  trainer = dataclasses.replace(
    by_name[args.workload.replace("sample", "train")], num_steps=args.steps
  )
  groups = [
    sampling_tasks(conv),
    gradient_tasks(conv),
    *(unroll_tasks(by_name[name]) for name in ("mlp2d_sample", "mlp2d_w16_sample")),
    donation_tasks(trainer),
  ]
  results = []
  for tasks in groups:
    for task in tasks:
      print(f"  preparing {task.impl}", file=sys.stderr, flush=True)
      task.prepare()
    round_robin(tasks, args.reps, lambda m: print(m, file=sys.stderr, flush=True))
    rows = [t.summary() for t in tasks]
    for row in rows:
      row["ratio"] = rows[0]["median_s"] / row["median_s"]
      print(
        f"{row['workload']:28s} {row['impl']:52s} {row['steps_per_s']:10.0f}/s  "
        f"x{row['ratio']:.2f}  compile {row['compile_s']:.1f} s",
        flush=True,
      )
    results += rows
  if args.out:
    with open(args.out, "w") as f:
      json.dump({"environment": jax.__version__, "results": results}, f, indent=1)
  return 0


if __name__ == "__main__":
  sys.exit(main())
