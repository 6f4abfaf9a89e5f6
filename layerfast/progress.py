"""The one progress bar helper: a live tqdm bar on a terminal, sparse lines elsewhere, and a
heartbeat where bars are hidden.

When stderr is not a terminal (CI logs, ``nohup``, captured notebook output) a bar that redraws
a few times a second fills the log, so there a bar first shows after :data:`LOG_INTERVAL_S`
seconds (shorter ones never do), then redraws at most every :data:`LOG_INTERVAL_S` seconds and
only after another tenth of its total: about a dozen lines for a bar of any length (one per
:data:`LOG_INTERVAL_S` when the total is unknown).

Hidden bars (the CLI's ``--no-progress``: :func:`hide_bars`) keep a heartbeat, so a long run
still shows it is alive: a step (one bar) that runs longer than the heartbeat interval
(:data:`HEARTBEAT_S` = 60 s, or ``LAYERFAST_HEARTBEAT_S`` seconds; 0 turns it off) prints one
line to stderr, ``evaluating: 12/61 coalitions, 3 min elapsed``, at its first update after each
interval, and one closing line when it printed any; a step shorter than that prints nothing.
``enabled=False`` (a caller's ``progress=False``) stays silent either way.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any

LOG_INTERVAL_S = 30.0  # seconds between redraws when stderr is not a terminal
LOG_STEPS = 10  # at most this many redraws (one per tenth of the total) when not a terminal
HEARTBEAT_S = 60.0  # seconds between heartbeat lines where bars are hidden
HEARTBEAT_ENV = "LAYERFAST_HEARTBEAT_S"  # overrides HEARTBEAT_S (0: no heartbeat)

clock = time.monotonic  # the heartbeat's clock (tests replace it)
_hidden = False  # hide_bars(): bars become heartbeats


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


class Heartbeat:
    """A bar that is not drawn: it counts like one (``update``, iteration, ``set_postfix``,
    ``close``) and writes one line to stderr at the first update at least ``interval`` seconds
    after the start or the last line, and a closing line if it wrote any."""

    def __init__(
        self,
        iterable: Iterable | None,
        total: float | None,
        desc: str,
        unit: str,
        interval: float,
    ):
        self.iterable, self.total, self.desc, self.unit = iterable, total, desc, unit
        self.interval, self.n, self.postfix = interval, 0.0, ""
        self.start = self.last = clock()
        self.lines = 0
        self.closed = False

    def __iter__(self) -> Iterator:
        try:
            for item in () if self.iterable is None else self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __len__(self) -> int:
        return len(self.iterable) if hasattr(self.iterable, "__len__") else int(self.total or 0)

    def update(self, n: float = 1) -> None:
        self.n += n
        now = clock()
        if now - self.last >= self.interval and not self.closed:
            self.last = now
            self._write(f"{elapsed(now - self.start)} elapsed")

    def set_postfix(self, ordered_dict: Any = None, refresh: bool = True, **kwargs: Any) -> None:
        items = {**(dict(ordered_dict) if ordered_dict else {}), **kwargs}
        self.postfix = ", ".join(f"{k}={v}" for k, v in items.items())

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        self.postfix = str(s)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.lines:
            self._write(f"done in {elapsed(clock() - self.start)}")

    def __enter__(self) -> Heartbeat:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _write(self, when: str) -> None:
        done = _number(self.n) + (f"/{_number(self.total)}" if self.total else "")
        note = f" ({self.postfix})" if self.postfix and not when.startswith("done") else ""
        print(f"{self.desc}: {done} {_plural(self.unit)}, {when}{note}", file=sys.stderr)
        sys.stderr.flush()
        self.lines += 1


def elapsed(seconds: float) -> str:
    """``45 s``, ``3 min``, ``2 h 05 min``: a duration as a heartbeat line says it."""
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes = int(seconds // 60)
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


def _number(x: float) -> str:
    text = f"{x:.1f}"  # the Game counts fractions of coalitions: 5.9999 is 6
    return text[:-2] if text.endswith(".0") else text


def _plural(unit: str) -> str:
    return unit + ("es" if unit.endswith(("s", "x", "ch", "sh")) else "s")


def heartbeat_s() -> float:
    """Seconds between heartbeat lines: ``LAYERFAST_HEARTBEAT_S`` when it is a number >= 0,
    else :data:`HEARTBEAT_S`; 0 means none."""
    try:
        value = float(os.environ.get(HEARTBEAT_ENV, HEARTBEAT_S))
    except ValueError:
        return HEARTBEAT_S
    return value if math.isfinite(value) and value >= 0 else HEARTBEAT_S


def hide_bars(hidden: bool = True) -> bool:
    """Hide every bar from now on (``hidden=False``: show them again), keeping the heartbeat
    lines (the module docstring); returns the setting before. The CLI's ``--no-progress``."""
    global _hidden
    before, _hidden = _hidden, bool(hidden)
    return before


@contextlib.contextmanager
def bars_hidden(hidden: bool = True) -> Iterator[None]:
    """:func:`hide_bars` for the length of a ``with`` block, then the setting before."""
    before = hide_bars(hidden)
    try:
        yield
    finally:
        hide_bars(before)


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
        a :class:`NullBar` when disabled, or a :class:`Heartbeat` while bars are hidden
        (:func:`hide_bars`). Bars are not left on screen when closed.
    """
    if not enabled:
        return NullBar() if iterable is None else iterable
    if total is None and iterable is not None and hasattr(iterable, "__len__"):
        total = len(iterable)
    if _hidden:
        interval = heartbeat_s()
        if interval <= 0:
            return NullBar() if iterable is None else iterable
        return Heartbeat(iterable, total, desc, unit, interval)
    from tqdm.auto import tqdm

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
