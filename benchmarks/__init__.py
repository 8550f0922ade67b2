"""Benchmarks of galcubecraft (run ``python -m benchmarks``)."""
