"""XLA CPU options that make jebm's convolutions fast, and how to switch them on.

On XLA CPU (jaxlib 0.10) convolutions go to YNNPACK fusions by default. For the EBM workloads
(Langevin chains: forward convolutions plus their input gradients) Eigen's convolutions with
oneDNN's matrix multiply make jebm's conv chains about 1.6x faster; small MLP energies get 10-20%
slower (``benchmarks/README.md``). The options only touch the CPU backend; GPU and TPU ignore
them.

XLA reads ``XLA_FLAGS`` once, when the first computation creates the backend, so ``import jebm``
sets them (``apply_on_import``) when it comes before any JAX computation (importing jax first is
fine); imported later, it warns once that they did not apply. Options already named in
``XLA_FLAGS`` are left as they are, so a user can override any of them, and setting the
environment variable ``JEBM_NO_FAST_CPU_FLAGS=1`` leaves ``XLA_FLAGS`` alone.
"""

import os
import warnings
from typing import Dict

OPT_OUT = "JEBM_NO_FAST_CPU_FLAGS"  # set (non-empty) to keep jebm from touching XLA_FLAGS

# name -> value, as jax.jit(...).lower(...).compile(compiler_options=...) takes them.
FAST_CPU_OPTIONS: Dict[str, object] = {
  "xla_cpu_use_onednn": True,
  "xla_cpu_experimental_ynn_fusion_type": "",
}


def _flag(name: str, value: object) -> str:
  text = str(value).lower() if isinstance(value, bool) else str(value)
  return f"--{name}={text}"


def use_fast_cpu_flags() -> str:
  """Adds ``FAST_CPU_OPTIONS`` to the ``XLA_FLAGS`` environment variable; returns its new value.

  Has an effect only before the first JAX computation of the process.
  """
  current = os.environ.get("XLA_FLAGS", "")
  added = [_flag(k, v) for k, v in FAST_CPU_OPTIONS.items() if f"--{k}=" not in current]
  os.environ["XLA_FLAGS"] = " ".join([current.strip(), *added]).strip()
  return os.environ["XLA_FLAGS"]


def _backends_started() -> bool:
  """Whether JAX has created its backends, so that XLA has read XLA_FLAGS already. (JAX has no
  public query for this; without the private one, assume not.)"""
  try:
    from jax._src import xla_bridge
  except ImportError:
    return False
  return getattr(xla_bridge, "backends_are_initialized", lambda: False)()


def apply_on_import() -> None:
  """What ``import jebm`` does: ``use_fast_cpu_flags()``, unless $JEBM_NO_FAST_CPU_FLAGS is set.

  When JAX's backends have started already (a computation ran before ``import jebm``), setting
  the flags would change nothing: if the process runs on the CPU without them, this warns once
  instead, with what to do.
  """
  if os.environ.get(OPT_OUT):
    return
  if not _backends_started():
    use_fast_cpu_flags()
    return
  import jax

  current = os.environ.get("XLA_FLAGS", "")
  missing = [_flag(k, v) for k, v in FAST_CPU_OPTIONS.items() if f"--{k}=" not in current]
  if missing and jax.default_backend() == "cpu":
    warnings.warn(
      "jebm was imported after JAX's first computation, so XLA's fast CPU options "
      f"({' '.join(missing)}) did not apply: convolution chains run about 1.6x slower. Import "
      "jebm before any JAX computation, or start Python with these options in XLA_FLAGS; set "
      f"{OPT_OUT}=1 to keep XLA's defaults without this warning.",
      stacklevel=3,
    )
