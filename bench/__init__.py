"""Benchmarks: ``python -m bench`` writes BENCHMARKS.md and bench/results.json."""
