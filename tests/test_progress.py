"""layerfast.progress: a live bar on a terminal, about a dozen redraws at most elsewhere."""

from __future__ import annotations

import io
import itertools
import re
import subprocess
import sys

import pytest
import tqdm.std

from layerfast.progress import NullBar, progress


class Terminal(io.StringIO):
    def isatty(self):
        return True


def redraws(text: str, desc: str) -> int:
    """How many times a bar labelled ``desc`` was drawn (tqdm separates redraws with \\r)."""
    return sum(1 for part in re.split(r"[\r\n]", text) if part.startswith(f"{desc}:"))


def test_disabled_returns_the_iterable_or_a_null_bar():
    items = [1, 2, 3]
    assert progress(items, desc="x", unit="it", enabled=False) is items
    bar = progress(total=3, desc="x", unit="it", enabled=False)
    assert isinstance(bar, NullBar)
    bar.update(2)
    bar.set_postfix(a=1)
    bar.close()


def test_terminal_keeps_the_live_bar(monkeypatch):
    monkeypatch.setattr(sys, "stderr", Terminal())
    bar = progress(total=10, desc="live", unit="it")
    assert bar.mininterval < 1 and bar.delay == 0
    bar.close()


def slow_clock(monkeypatch):
    """tqdm's clock jumps a minute at each reading: every loop looks like a long sweep."""
    clock = itertools.count(0.0, 60.0)
    monkeypatch.setattr(tqdm.std, "time", lambda: next(clock))


def draw(n: int) -> str:
    """Run an iterator bar and a manual bar (fractional updates) of ``n`` steps; their output."""
    assert sum(progress(range(n), desc="loop", unit="it")) == n * (n - 1) // 2
    bar = progress(total=n, desc="manual", unit="it")
    for _ in range(4 * n):
        bar.update(0.25)
    bar.close()
    return sys.stderr.getvalue()


@pytest.mark.parametrize("n", [50, 20_000])
def test_not_a_terminal_draws_about_a_dozen_times(monkeypatch, n):
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    slow_clock(monkeypatch)
    text = draw(n)
    assert 2 <= redraws(text, "loop") <= 12 and 2 <= redraws(text, "manual") <= 12


def test_a_terminal_redraws_live(monkeypatch):
    monkeypatch.setattr(sys, "stderr", Terminal())
    slow_clock(monkeypatch)
    text = draw(50)
    assert redraws(text, "loop") > 40 and redraws(text, "manual") > 40


def test_not_a_terminal_short_bars_stay_silent(monkeypatch):
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    for _ in progress(range(1000), desc="quick", unit="it"):
        pass
    assert stream.getvalue() == ""


def test_import_is_light():
    code = (
        "import sys, layerfast.progress; "
        "heavy = [m for m in ('tqdm', 'numpy', 'torch') if m in sys.modules]; "
        "print(heavy); sys.exit(bool(heavy))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
