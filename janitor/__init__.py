"""janitor: a storage-lifecycle janitor."""

__version__ = "0.1.0"
