"""provisor: provision, configure, operate and retire multi-machine IT services."""

# A constant rather than importlib.metadata: reading package metadata costs a
# noticeable slice of every CLI start. pyproject.toml takes the version from here.
__version__ = "0.1.0"

__all__ = ["__version__"]
