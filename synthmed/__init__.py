"""synthmed: synthetic medical image/mask pairs, done without leakage."""

__version__ = "0.1.0"
