"""Benchmarks of the fakeface pipeline (GitHub issue 8): ``python -m bench`` / ``make bench``."""
