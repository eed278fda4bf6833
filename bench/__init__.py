"""Benchmarks of the fakeface pipeline: ``python -m bench`` / ``make bench``."""
