"""provisor: provision, configure, operate and retire multi-machine IT services."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("provisor")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"

__all__ = ["__version__"]
