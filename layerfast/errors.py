"""The library's own error types.

Everything a user's input can cause (an option out of range, a malformed mask or task file, a path
that cannot be read) raises a :class:`LayerfastError`; the CLI prints those as one line and exits 2.
Any other exception is a bug and keeps its traceback. Each type also derives from the built-in
type callers already catch (``ValueError``, ``RuntimeError``), so ``except ValueError`` still works.
"""

from __future__ import annotations

import os
import sys
import warnings


class LayerfastError(Exception):
    """Base class of every error a user's input can cause."""


class UsageError(LayerfastError, ValueError):
    """A bad option, value, mask, path or input; the message names the culprit."""


class OutputError(LayerfastError, OSError):
    """A file or folder that cannot be written (disk full, over quota, read-only file system,
    permission denied); the message names the path and the reason. Also an ``OSError``, so
    ``except OSError`` still works; ``errno`` is the failed call's when known."""

    def __init__(self, message: str, errno: int | None = None):
        super().__init__(message)
        self.errno = errno


class LayerfastWarning(UserWarning):
    """A result that is defined but degraded (NaN scores, NaN error bars); the message says
    why and what to change."""


def warn(message: str) -> None:
    """Issue a :class:`LayerfastWarning` attributed to the user's line: the first frame outside
    the ``layerfast`` package."""
    package = os.path.dirname(os.path.abspath(__file__)) + os.sep
    frame, level = sys._getframe(1), 2  # stacklevel 2 is warn()'s caller
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(package):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, LayerfastWarning, stacklevel=level)
