"""The library's own error types.

Everything a user's input can cause (an option out of range, a malformed mask or task file, a path
that cannot be read) raises a :class:`LayerfastError`; the CLI prints those as one line and exits 2.
Any other exception is a bug and keeps its traceback. Each type also derives from the built-in
type callers already catch (``ValueError``, ``RuntimeError``), so ``except ValueError`` still works.
"""

from __future__ import annotations


class LayerfastError(Exception):
    """Base class of every error a user's input can cause."""


class UsageError(LayerfastError, ValueError):
    """A bad option, value, mask, path or input; the message names the culprit."""
