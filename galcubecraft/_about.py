"""The package's version, for modules that write it into files (no import of the package root)."""
try:
    from .version import version
except ImportError:  # pragma: no cover - running from a source tree without setuptools_scm
    version = "0.0.0.dev0"

__all__ = ["version"]
