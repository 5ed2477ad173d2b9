"""Trapline: spam-trap and spam-infrastructure intelligence."""

__version__ = "0.1.0"
