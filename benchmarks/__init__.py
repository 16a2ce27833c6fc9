"""Benchmarks: slow measurements outside CI (`make bench`)."""
