"""The installed hfkd version (its own module, so that any part can read it without importing the package)."""
__version__ = "0.1.0"
