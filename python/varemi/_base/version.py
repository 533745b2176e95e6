"""The installed varemi version (``0+unknown`` in a source tree that was never installed)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("varemi")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
