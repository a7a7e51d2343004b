"""Benchmark scripts of vild_d2: each runs as ``python -m benchmarks.NAME`` from the repository root."""
