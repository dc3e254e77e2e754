"""The version of patcc: stamped into every compiled model and the tuning cache."""

__version__ = "0.1.0"
