"""Benchmarks: `python -m tests.bench.run` measures Vigie and writes docs/benchmarks.md."""
