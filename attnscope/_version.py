"""The package version, in a leaf module so that every stage can record it."""

__version__ = "0.1.0"
