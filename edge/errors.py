"""Errors the CLI shows to a user as one line (exit code 2), never as a traceback."""

from __future__ import annotations


class UserError(Exception):
    """Bad input from the user: a wrong path, a corrupt file, an incompatible artifact,
    a missing optional package. The message must say what to do."""


class MissingDependencyError(UserError):
    """An optional package (extra) that this operation needs is not installed."""

    def __init__(self, package: str, extra: str, purpose: str):
        super().__init__(
            f"{purpose} needs the Python package '{package}', which is not installed: "
            f"pip install 'edge-harness[{extra}]' (or `make install`)"
        )
        self.package = package
        self.extra = extra


def require(module: str, extra: str, purpose: str):
    """Import an optional module or raise MissingDependencyError naming the extra to install."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(module.split(".")[0], extra, purpose) from exc
