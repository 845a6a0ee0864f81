"""Throughput benchmarks of jebm (see benchmarks/README.md); not part of the library."""
