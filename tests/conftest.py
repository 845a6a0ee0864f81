"""Test set-up: two emulated CPU devices, so multi-device code is always exercised; the XLA CPU
options the launchers use."""

import os

from jebm.xla_flags import use_fast_cpu_flags

os.environ["XLA_FLAGS"] = (
  os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
use_fast_cpu_flags()
