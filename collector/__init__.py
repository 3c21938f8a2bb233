"""collector: export every GaussDB(DWS) cluster's upgrade history across a Huawei Cloud fleet."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("collector")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
