"""Named training recipes: ``PRESETS[name]`` is a ``jebm.config.Config``."""

from experiments.configs.presets import PRESETS, get_preset, softmax_baseline

__all__ = ["PRESETS", "get_preset", "softmax_baseline"]
