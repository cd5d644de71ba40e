"""Throughput benchmarks (not tests): `python -m bench.throughput`; see bench/README.md.

Kept free of TensorFlow imports: `bench.throughput` must set thread-pool environment
variables before TensorFlow is first imported.
"""
