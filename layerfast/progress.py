"""The one progress bar helper: a live tqdm bar on a terminal, sparse lines elsewhere.

When stderr is not a terminal (CI logs, ``nohup``, captured notebook output) a bar that redraws
a few times a second fills the log, so there a bar first shows after :data:`LOG_INTERVAL_S`
seconds (shorter ones never do), then redraws at most every :data:`LOG_INTERVAL_S` seconds and
only after another tenth of its total: about a dozen lines for a bar of any length (one per
:data:`LOG_INTERVAL_S` when the total is unknown).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable
from typing import Any

LOG_INTERVAL_S = 30.0  # seconds between redraws when stderr is not a terminal
LOG_STEPS = 10  # at most this many redraws (one per tenth of the total) when not a terminal


class NullBar:
    """Stands in for a bar that is not drawn: ``update``, ``close`` and ``set_postfix`` do
    nothing, so call sites need no ``if bar is not None``."""

    n: float = 0

    def update(self, n: float = 1) -> None:
        pass

    def set_postfix(self, *args: Any, **kwargs: Any) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> NullBar:
        return self

    def __exit__(self, *exc: Any) -> None:
        pass


def is_terminal(stream: Any = None) -> bool:
    """Whether ``stream`` (default: the current ``sys.stderr``) is an interactive terminal."""
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed file
        return False


def progress(
    iterable: Iterable | None = None,
    *,
    total: float | None = None,
    desc: str,
    unit: str,
    enabled: bool = True,
    bar_format: str | None = None,
) -> Any:
    """A progress bar over ``iterable``, or one to ``update(k)`` by hand when it is None.

    Args:
        iterable: the items to wrap (the bar counts them as they are consumed); None for a
            manual bar.
        total: the count the bar reaches (default: ``len(iterable)`` when it has one).
        desc: the label left of the bar, e.g. ``"evaluating"``.
        unit: what one step counts, e.g. ``"coalition"``.
        enabled: False returns ``iterable`` unchanged (or a :class:`NullBar` when it is None).
        bar_format: a tqdm ``bar_format`` string (default: tqdm's).

    Returns:
        a tqdm bar (iterate it, or call ``update`` and ``close``), or the unwrapped iterable /
        a :class:`NullBar` when disabled. Bars are not left on screen when closed.
    """
    if not enabled:
        return NullBar() if iterable is None else iterable
    from tqdm.auto import tqdm

    if total is None and iterable is not None and hasattr(iterable, "__len__"):
        total = len(iterable)
    options: dict[str, Any] = {"total": total, "desc": desc, "unit": unit, "leave": False}
    if bar_format is not None:
        options["bar_format"] = bar_format
    if not is_terminal():
        # tqdm redraws only after both; an infinite maxinterval stops its monitor thread from
        # dropping miniters back to 1 after a slow stretch
        options.update(
            delay=LOG_INTERVAL_S,
            mininterval=LOG_INTERVAL_S,
            maxinterval=math.inf,
            miniters=total / LOG_STEPS if total else 1,
        )
    return tqdm(iterable, **options)
