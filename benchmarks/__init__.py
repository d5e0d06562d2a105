"""Benchmark harnesses behind `atmguard bench ...`; kept outside the package (they are not the product)."""
