"""Benchmarks. ``make bench`` (``python -m bench``) runs them all and prints a table; each
benchmark ends with one line of ``key=value`` figures."""
