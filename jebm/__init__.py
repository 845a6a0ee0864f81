"""jebm: energy-based models in JAX/Flax (Du & Mordatch 2019).

Sign convention everywhere: p(x) ∝ exp(-E(x)), low energy = likely. An energy fn maps x [B, ...]
(and an optional condition y [B, ...]) to energies [B].
"""

from jebm import adversarial, checkpoint, compose, config, data, energy, eval, files, generate
from jebm import langevin, losses, metrics, models, ops, optim, parallel, replay, train, viz
from jebm import xla_flags

__version__ = "0.1.0"
