"""Benchmarks of MTR's services; each module runs with `python -m bench.<name>` and writes to bench/results/."""
