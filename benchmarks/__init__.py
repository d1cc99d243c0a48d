"""Benchmarks: commands that measure and write their figures (not tests). See the Makefile's bench-* targets."""
