"""jebm: energy-based models in JAX/Flax."""
