"""Benchmarks and benchmark harnesses (``python -m benchmarks.swebench``)."""
