"""Throughput benchmarks of jebm (see benchmarks/README.md); not part of the library.

The benchmark compiles each variant with its own XLA CPU options, so ``import jebm`` must not set
them for the whole process (``jebm.xla_flags.OPT_OUT``).
"""

import os

os.environ.setdefault("JEBM_NO_FAST_CPU_FLAGS", "1")
