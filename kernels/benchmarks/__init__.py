"""kernels/benchmarks"""
