"""Benchmarks of the packed-attention kernels against named baselines (see kernels/README.md)."""
