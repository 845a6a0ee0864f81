"""jebm's side of the benchmark: the workloads through jebm's public functions, jitted as a user
would (``jax.jit`` of ``langevin.sample`` / ``train.make_train_step``), plus the FLOP counts and
the machine's float32 matmul rate.

Implementations (the launchers set ``jebm.xla_flags.use_fast_cpu_flags()``; here every
compilation gets the same options explicitly, so that variants compare inside one process):
  "jebm"                  the library as it is: ``ConvEnergy`` / ``MLPEnergy`` + ``langevin.sample``
                          or ``make_train_step`` (train state donated), compiled with
                          ``jebm.xla_flags.FAST_CPU_OPTIONS``.
  "jebm -flags"           the same without those options (XLA's defaults: a notebook that did not
                          call ``use_fast_cpu_flags``).
  "jebm -convgrad"        XLA's own convolution input gradients instead of ``jebm.ops.conv2d``'s
                          (traced under ``jebm.ops.xla_conv_gradients()``).
  "jebm -flags -convgrad" both removed: a straightforward jit + fori_loop implementation.
  "jebm bf16"             ``ConvEnergy(dtype=bfloat16)``: bf16 network compute, float32 params,
                          energies and Langevin state.
  "user flax"             the same network in plain ``flax.linen`` layers
                          (``benchmarks.swap_conv.PlainFlaxEnergy``), sampled with
                          ``langevin.sample`` and the options ``import jebm`` sets: a user's model.
  "user flax (import jebm only)"  the same in a fresh process that did nothing but ``import jebm``
                          first, compiled without explicit options
                          (``benchmarks/fresh_user_flax.py``, started by ``run.py --extra``).
"""

import contextlib
import math
from typing import Any, Callable, Dict, List, Optional

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.swap_conv import PlainFlaxEnergy
from benchmarks.timing import Task, timed
from benchmarks.workloads import LEARNING_RATE, Workload
from jebm import langevin, ops, optim, train
from jebm.energy import from_model
from jebm.xla_flags import FAST_CPU_OPTIONS

NO_FLAGS, NO_CONVGRAD = "-flags", "-convgrad"
TRAIN_IMPLS = ("jebm", f"jebm {NO_FLAGS}", f"jebm {NO_CONVGRAD}", f"jebm {NO_FLAGS} {NO_CONVGRAD}")
SAMPLE_IMPLS = TRAIN_IMPLS + ("jebm bf16",)
USER_FLAX = "user flax"
FRESH_USER_FLAX = "user flax (import jebm only)"
EXTRA_SAMPLE_IMPLS = (f"jebm bf16 {NO_CONVGRAD}", USER_FLAX)
MLP_IMPLS = ("jebm", f"jebm {NO_FLAGS}")
SEED = 0
MATMUL_SIZE = 2048  # the float32 yardstick: MATMUL_SIZE^2 matrices


def impls_for(workload: Workload, precision: bool = True, extra: bool = False) -> List[str]:
  """The jebm implementations that apply to a workload (bf16 ones only if ``precision``;
  ``extra`` adds the ones left out of the default run to save time)."""
  if workload.net == "mlp":
    return list(MLP_IMPLS)
  names = (
    TRAIN_IMPLS
    if workload.kind == "train"
    else SAMPLE_IMPLS + (EXTRA_SAMPLE_IMPLS if extra else ())
  )
  return [n for n in names if precision or "bf16" not in n]


def model_for(workload: Workload, impl: str):
  """The energy model of an implementation: jebm's Flax module, or the plain-Flax twin."""
  model = workload.model(jnp.bfloat16 if "bf16" in impl else None)
  if impl in (USER_FLAX, FRESH_USER_FLAX):
    return PlainFlaxEnergy(model.features, model.activation)
  return model


def init_variables(workload: Workload):
  """The network's variables (float32), the same for every implementation."""
  x = jnp.zeros((1, *workload.shape), jnp.float32)
  return workload.model().init(jax.random.key(SEED), x)


def initial_state(workload: Workload) -> jax.Array:
  """Chain starts [B, ...]: uniform in [0, 1) for images, standard normal for 2-D points."""
  key = jax.random.key(SEED + 1)
  shape = (workload.batch, *workload.shape)
  if workload.net == "mlp":
    return jax.random.normal(key, shape, jnp.float32)
  return jax.random.uniform(key, shape, jnp.float32)


def data_batch(workload: Workload) -> Dict[str, jax.Array]:
  """A fixed random uint8 image batch (training throughput does not depend on the pixels)."""
  images = jax.random.randint(jax.random.key(SEED + 2), (workload.batch, *workload.shape), 0, 256)
  return {"image": images.astype(jnp.uint8), "label": jnp.zeros((workload.batch,), jnp.int32)}


def sample_fn(workload: Workload, impl: str) -> Callable:
  """``(variables, key, x0) -> x`` running ``langevin.sample`` for the workload (un-jitted)."""
  model, config = model_for(workload, impl), workload.langevin_config()

  def run(variables, rng_key, x0):
    return langevin.sample(rng_key, from_model(model.apply, variables), x0, config)[0]

  return run


def _conv_gradients(impl: str):
  """XLA's own convolution gradients for the ``-convgrad`` rows (``jebm.energy.from_model`` would
  otherwise run the model's convolutions as ``jebm.ops.conv2d``)."""
  return ops.xla_conv_gradients() if NO_CONVGRAD in impl else contextlib.nullcontext()


def _options(impl: str):
  """Explicit compiler options; none in the fresh process, which has ``import jebm``'s."""
  return None if NO_FLAGS in impl or impl == FRESH_USER_FLAX else FAST_CPU_OPTIONS


def _block(tree):
  return jax.block_until_ready(tree)


def sample_task(workload: Workload, impl: str, variables, outputs: Dict[str, Any]) -> Task:
  """A timed Langevin chain; the last output is kept in ``outputs[impl]``."""
  x0, key, compiled = initial_state(workload), jax.random.key(SEED + 3), {}

  def prepare():
    with _conv_gradients(impl):
      return timed(
        lambda: compiled.setdefault(
          "fn",
          jax.jit(sample_fn(workload, impl))
          .lower(variables, key, x0)
          .compile(compiler_options=_options(impl)),
        )
      )

  def run():
    return timed(lambda: outputs.__setitem__(impl, _block(compiled["fn"](variables, key, x0))))

  return Task(
    impl, workload.name, workload.sample_steps, precision=_precision(impl), prepare=prepare, run=run
  )


def _precision(impl: str) -> str:
  return "bf16 compute" if "bf16" in impl else "float32"


def train_task(workload: Workload, impl: str, donate: bool = True) -> Task:
  """A timed training step (replay draw, chain, CD + L2 loss, optimiser update, replay push)."""
  model, config = model_for(workload, impl), workload.train_config()
  optimizer = optim.igebm_adam(LEARNING_RATE)
  holder, batch = {}, data_batch(workload)

  def prepare():
    holder["state"] = train.create_train_state(
      jax.random.key(SEED), model, optimizer, config, workload.shape
    )
    step = jax.jit(
      train.make_train_step(model, optimizer, config), donate_argnums=(0,) if donate else ()
    )
    with _conv_gradients(impl):
      return timed(
        lambda: holder.setdefault(
          "step", step.lower(holder["state"], batch).compile(compiler_options=_options(impl))
        )
      )

  def one_step():
    holder["state"], metrics = holder["step"](holder["state"], batch)
    _block((holder["state"], metrics))

  return Task(
    impl,
    workload.name,
    workload.sample_steps,
    precision=_precision(impl),
    prepare=prepare,
    run=lambda: timed(one_step),
  )


def make_tasks(
  workload: Workload, variables, outputs, precision: bool = True, extra: bool = False
) -> List[Task]:
  """The jebm tasks of one workload."""
  impls = impls_for(workload, precision, extra)
  if workload.kind == "sample":
    return [sample_task(workload, impl, variables, outputs) for impl in impls]
  return [train_task(workload, impl) for impl in impls]


def step_flops_xla(workload: Workload, variables) -> float:
  """FLOPs of one Langevin step per chain, from XLA's cost analysis of ``langevin.step`` (float32,
  XLA's own conv gradient, whose FLOPs XLA counts without the inserted zeros): forward + input
  gradient of the energy, noise, clip and clamp. The same FLOPs for every implementation."""
  model, config, x = workload.model(), workload.langevin_config(), initial_state(workload)

  def one_step(variables, rng_key, x):
    state = langevin.LangevinState(x, jnp.zeros(x.shape[:1]), jnp.zeros_like(x))
    return langevin.step(rng_key, state, from_model(model.apply, variables), config)[0].x

  with ops.xla_conv_gradients():
    compiled = jax.jit(one_step).lower(variables, jax.random.key(0), x).compile()
  analysis = compiled.cost_analysis()
  if isinstance(analysis, (list, tuple)):
    analysis = analysis[0]
  return float(analysis["flops"]) / workload.batch


def step_flops_analytic(workload: Workload) -> float:
  """Multiply-adds x 2 of the energy's convolutions and dense layers (padding counted as real
  taps), x 2 for forward + input gradient; elementwise work is left out."""
  if workload.net == "mlp":
    widths = [workload.shape[0], *workload.model().hidden_sizes, 1]
    forward = sum(2 * a * b for a, b in zip(widths[:-1], widths[1:]))
    return 2.0 * forward
  height, width, channels = workload.shape
  features = workload.model().features
  forward = 2 * height * width * 9 * channels * features[0]
  c_in = features[0]
  for c_out in features:
    height, width = math.ceil(height / 2), math.ceil(width / 2)
    forward += 2 * height * width * 9 * c_in * c_out
    c_in = c_out
  forward += 2 * features[-1] * features[-1] + 2 * features[-1]
  return 2.0 * forward


def matmul_task(size: int = MATMUL_SIZE) -> Task:
  """The float32 FLOP/s yardstick: a jitted ``jnp.dot`` of two size x size matrices; its
  'sample_steps' is the FLOP count, so steps_per_s is FLOP/s."""
  a = jax.random.normal(jax.random.key(0), (size, size), jnp.float32)
  holder = {}

  def prepare():
    return timed(lambda: holder.setdefault("fn", jax.jit(jnp.dot).lower(a, a).compile()))

  return Task(
    "jax matmul",
    "matmul",
    2 * size**3,
    prepare=prepare,
    run=lambda: timed(lambda: _block(holder["fn"](a, a))),
  )


def energies(workload: Workload, variables, impl: str = "jebm") -> np.ndarray:
  """The network's energies [B] at the chain starts (for cross-checking other implementations)."""
  return np.asarray(model_for(workload, impl).apply(variables, initial_state(workload)))


def bf16_quality(workload: Workload, variables, outputs) -> Optional[Dict[str, float]]:
  """Float32 energies of the final samples of the float32 and bf16 chains (same start, same
  noise) and their mean absolute pixel difference: the reduced-precision option's cost."""
  pairs = [
    (a, b)
    for a, b in (("jebm", "jebm bf16"), (f"jebm {NO_CONVGRAD}", f"jebm bf16 {NO_CONVGRAD}"))
    if a in outputs and b in outputs
  ]
  if not pairs:
    return None
  apply = jax.jit(workload.model().apply)
  f32, bf16 = pairs[0]
  return {
    "mean_energy_float32_chain": float(jnp.mean(apply(variables, outputs[f32]))),
    "mean_energy_bf16_chain": float(jnp.mean(apply(variables, outputs[bf16]))),
    "mean_energy_start": float(jnp.mean(apply(variables, initial_state(workload)))),
    "mean_abs_pixel_diff": float(jnp.mean(jnp.abs(outputs[f32] - outputs[bf16]))),
  }


def export_weights(workload: Workload, variables) -> Dict[str, np.ndarray]:
  """Flat {"layer/param": array} of the float32 params plus the chain starts, jebm's energies
  there and the data batch, for the PyTorch side (which converts HWIO kernels itself)."""
  flat = {
    "/".join(str(getattr(k, "key", k)) for k in path): np.asarray(leaf)
    for path, leaf in jax.tree_util.tree_flatten_with_path(variables["params"])[0]
  }
  flat["x0"] = np.asarray(initial_state(workload))
  flat["jebm_energy"] = energies(workload, variables)
  if workload.kind == "train":
    flat["images"] = np.asarray(data_batch(workload)["image"])
  return flat
