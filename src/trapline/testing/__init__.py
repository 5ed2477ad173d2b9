"""Test and benchmark helpers that ship with the package (ground-truth generators)."""
