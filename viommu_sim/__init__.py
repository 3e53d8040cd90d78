"""The viommu-sim command line (``viommu-sim``) and package metadata."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("viommu-sim")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0+source"
