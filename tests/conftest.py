"""Test set-up: two emulated CPU devices, so multi-device code is always exercised; the XLA CPU
options the launchers use."""

import os

import pytest

from jebm.xla_flags import use_fast_cpu_flags

os.environ["XLA_FLAGS"] = (
  os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
use_fast_cpu_flags()


@pytest.fixture(scope="session")
def compilation_cache_env(tmp_path_factory) -> dict:
  """Environment variables that give the launchers the tests start one persistent JAX compilation
  cache for the session: the many launches of the same tiny programs then compile each once."""
  return dict(
    JAX_COMPILATION_CACHE_DIR=str(tmp_path_factory.mktemp("jax_cache")),
    JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
    JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="-1",
  )
