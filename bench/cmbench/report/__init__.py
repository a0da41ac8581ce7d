"""The report, docs/BENCHMARKS.md: written from what the run measured, once every figure ran."""

from .document import write

__all__ = ["write"]
