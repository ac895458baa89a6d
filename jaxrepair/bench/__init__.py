"""Benchmark scripts (``jaxrepair bench ...``): timings and ratios measured in one run."""
