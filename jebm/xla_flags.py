"""XLA CPU options that make jebm's convolutions fast, and how to switch them on.

On XLA CPU (jaxlib 0.10) convolutions go to YNNPACK fusions by default. For the EBM workloads
(Langevin chains: forward convolutions plus their input gradients) Eigen's convolutions with
oneDNN's matrix multiply make jebm's conv chains about 1.6x faster; small MLP energies get 10-20%
slower (``benchmarks/README.md``). The options only touch the CPU backend; GPU and TPU ignore
them.

XLA reads ``XLA_FLAGS`` once, when the first computation creates the backend, so call
``use_fast_cpu_flags()`` before any JAX computation (importing jax is fine). The launchers in
``experiments/`` do; in a notebook, call it in the first cell. Options already named in
``XLA_FLAGS`` are left as they are, so a user can override any of them.
"""

import os
from typing import Dict

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
