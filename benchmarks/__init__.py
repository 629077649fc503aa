"""Benchmarks: side-by-side ratios measured in one run (router vs direct Triton, defense vs none)."""
