"""Fuzzing the package's parsers of untrusted bytes (see `python -m fuzz.run --help` and BENCHMARKS.md)."""
