"""jebm: energy-based models in JAX/Flax (Du & Mordatch 2019).

Sign convention everywhere: p(x) ∝ exp(-E(x)), low energy = likely. An energy fn maps x [B, ...]
(and an optional condition y [B, ...]) to energies [B].

Importing jebm before any JAX computation sets the XLA CPU options that make its chains fast
(``jebm.xla_flags``; opt out with JEBM_NO_FAST_CPU_FLAGS=1).
"""

from jebm import xla_flags

xla_flags.apply_on_import()  # first: XLA reads XLA_FLAGS only when its backend starts

# ruff: noqa: E402 (the flags must be set before any submodule could start a JAX backend)
from jebm import adversarial, checkpoint, compose, config, data, energy, eval, files, generate
from jebm import langevin, losses, metrics, models, ops, optim, parallel, replay, train, viz

__version__ = "0.1.0"
