"""layerfast.progress: a live bar on a terminal, about a dozen redraws at most elsewhere, and a
heartbeat line at most once a minute where bars are hidden (``--no-progress``)."""

from __future__ import annotations

import io
import itertools
import re
import subprocess
import sys

import pytest
import tqdm.std

import layerfast.progress
from layerfast.progress import Heartbeat, NullBar, bars_hidden, progress


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


# --- hidden bars keep a heartbeat (--no-progress) ------------------------------------------------
class FakeClock:
    """Seconds that pass when the test says so, plus ``step`` at every reading."""

    def __init__(self) -> None:
        self.now, self.step = 1000.0, 0.0

    def __call__(self) -> float:
        self.now += self.step
        return self.now


@pytest.fixture
def hidden(monkeypatch):
    """Bars hidden and a fake clock; yields (clock, start capturing stderr: a StringIO). The
    capture starts in the test's body: pytest sets sys.stderr again after a fixture's setup."""
    clock = FakeClock()
    monkeypatch.setattr(layerfast.progress, "clock", clock)
    monkeypatch.delenv(layerfast.progress.HEARTBEAT_ENV, raising=False)

    def capture() -> io.StringIO:
        stream = io.StringIO()
        monkeypatch.setattr(sys, "stderr", stream)
        return stream

    with bars_hidden():
        yield clock, capture


def test_a_long_step_beats_once_a_minute(hidden):
    clock, capture = hidden
    stream = capture()
    bar = progress(total=61, desc="evaluating", unit="coalition")
    assert isinstance(bar, Heartbeat)
    for _ in range(61):  # one coalition every 10 s: 610 s in all
        clock.now += 10
        bar.update(1)
        bar.set_postfix_str("w0 3.1/s", refresh=False)
    bar.close()
    lines = stream.getvalue().splitlines()
    assert lines[0] == "evaluating: 6/61 coalitions, 1 min elapsed (w0 3.1/s)"
    assert lines[1] == "evaluating: 12/61 coalitions, 2 min elapsed (w0 3.1/s)"
    assert len(lines) == 11 and lines[-1] == "evaluating: 61/61 coalitions, done in 10 min"


def test_a_short_step_stays_silent(hidden):
    clock, capture = hidden
    stream = capture()
    items = list(range(100))
    seen = []
    for item in progress(items, desc="statistics", unit="batch"):
        clock.now += 0.5  # 50 s in all
        seen.append(item)
    assert seen == items and stream.getvalue() == ""


def test_an_iterator_beats_and_counts(hidden):
    clock, capture = hidden
    stream = capture()
    for _ in progress(range(5), desc="statistics", unit="batch"):
        clock.now += 100
    assert stream.getvalue().splitlines() == [
        "statistics: 1/5 batches, 1 min elapsed",
        "statistics: 2/5 batches, 3 min elapsed",
        "statistics: 3/5 batches, 5 min elapsed",
        "statistics: 4/5 batches, 6 min elapsed",
        "statistics: 5/5 batches, 8 min elapsed",
        "statistics: 5/5 batches, done in 8 min",
    ]


def test_the_interval_variable_and_what_stays_silent(hidden, monkeypatch):
    clock, capture = hidden
    stream = capture()
    monkeypatch.setenv(layerfast.progress.HEARTBEAT_ENV, "5")
    bar = progress(total=2.5, desc="shapley", unit="eval")
    clock.now += 5
    bar.update(0.5)
    assert stream.getvalue() == "shapley: 0.5/2.5 evals, 5 s elapsed\n"
    monkeypatch.setenv(layerfast.progress.HEARTBEAT_ENV, "0")  # off
    items = [1, 2]
    assert progress(items, desc="x", unit="it") is items
    monkeypatch.setenv(layerfast.progress.HEARTBEAT_ENV, "soon")  # not a number: the default
    assert layerfast.progress.heartbeat_s() == layerfast.progress.HEARTBEAT_S
    assert isinstance(progress(total=3, desc="x", unit="it", enabled=False), NullBar)


def test_bars_hidden_restores_the_setting():
    assert layerfast.progress.hide_bars(False) is False
    with bars_hidden():
        assert layerfast.progress._hidden
        with bars_hidden(False):
            assert not layerfast.progress._hidden
        assert layerfast.progress._hidden
    assert not layerfast.progress._hidden


def test_a_game_with_hidden_bars_beats(hidden, tiny_llama, tiny_task):
    """The Game's own bar (per-batch fractions, a postfix) as --no-progress will run it."""
    import numpy as np

    from layerfast.evaluation.game import Game

    clock, capture = hidden
    stream = capture()
    game = Game(tiny_llama, tiny_task, batch_tokens=16, progress=True)
    clock.step = 60.0  # a minute passes at every reading: a long sweep
    masks = ~np.eye(game.n_players, dtype=bool)
    game(masks)
    lines = stream.getvalue().splitlines()
    assert lines and all(ln.startswith("evaluating: ") for ln in lines)
    assert re.fullmatch(r"evaluating: [\d.]+/\d+ coalitions, \d+ min elapsed", lines[0])
    assert re.fullmatch(rf"evaluating: {len(masks)}/{len(masks)} coalitions, done in .*", lines[-1])
