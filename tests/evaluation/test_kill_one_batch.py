"""kill -9 inside a sweep whose task fits in one forward batch: the loss is bounded in coalitions.

Work used to be committed per (batch x chunk of 64 coalitions), so when a task packed into one
batch nothing reached the cache until every coalition of the chunk had run, and a kill lost the
whole sweep. Now the in-process runner hands finished coalitions to the cache at most
``FLUSH_COALITIONS`` (4) at a time or ``FLUSH_SECONDS`` apart, so a kill loses at most
``FLUSH_COALITIONS`` finished coalition-batches (the one being computed when the kill lands was
not finished, so it is not counted as work done).

A worker process (this file run as a module) evaluates 40 coalitions of a tiny Llama whose task
is one batch, with the default chunk of 64 (the whole sweep in flight), logging one line per
coalition it scores with an unbuffered append that survives SIGKILL. The parent kills it twice
at random points once the cache holds a random number of coalitions, then lets a third run
finish, and checks (a) per kill, the coalitions scored but not stored are at most 4, and
nothing stored was scored again; (b) the results are bit-identical to an uninterrupted run in
the parent.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
N_COALITIONS = 40
SLEEP_S = 0.03  # per scored coalition, so kills land inside the one batch
KILLS = 2


def sweep(n_players: int) -> np.ndarray:
    rng = np.random.default_rng(7)
    codes = rng.choice(2**n_players, size=N_COALITIONS, replace=False)
    return ((codes[:, None] >> np.arange(n_players)[::-1]) & 1).astype(bool)


def make_game(cache: str | None):
    import layerfast as lf
    from tests.conftest import make_task
    from tests.helpers.tiny_models import tiny_model
    from tests.helpers.tiny_tokenizer import tiny_tokenizer

    tok = tiny_tokenizer()
    model = lf.load(tiny_model("llama", vocab_size=len(tok)), tokenizer=tok)
    return lf.Game(model, make_task(), utility="acc", cache=cache, progress=False)


def worker(cache: str, log: str) -> None:
    import torch

    torch.set_num_threads(1)
    game = make_game(cache)
    assert len(game.executor.batches) == 1
    ex = game.executor
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    score = ex.score

    def logged_score(state, batch):
        values = score(state, batch)
        os.write(fd, b"1\n")
        time.sleep(SLEEP_S)
        return values

    ex.score = logged_score
    game.loglik(sweep(game.n_players))


def stored(cache: Path) -> int:
    """Coalitions whose one batch is in the cache (finished rows plus partial pieces)."""
    if not cache.exists():
        return 0
    try:
        with sqlite3.connect(cache, timeout=60) as db:
            done = db.execute("SELECT COUNT(*) FROM coalitions").fetchone()[0]
            parts = db.execute("SELECT COUNT(*) FROM partials").fetchone()[0]
    except sqlite3.OperationalError:  # the worker has not made its tables yet
        return 0
    return done + parts


def scored(log: Path) -> int:
    return len(log.read_text().split()) if log.exists() else 0


def test_sigkill_in_a_one_batch_sweep_loses_at_most_four_coalitions(tmp_path):
    from layerfast.evaluation.runner import FLUSH_COALITIONS

    rng = np.random.default_rng(0)
    cache = tmp_path / "utilities.sqlite"
    before, kills = 0, 0
    for run in range(KILLS + 1):
        log = tmp_path / f"run{run}.log"
        args = [sys.executable, "-m", "tests.evaluation.test_kill_one_batch", str(cache), str(log)]
        proc = subprocess.Popen(args, cwd=ROOT, stderr=subprocess.PIPE)
        if run < KILLS:
            target = before + int(rng.integers(2, max(3, (N_COALITIONS - before) // 2)))
            while proc.poll() is None and stored(cache) < target:
                time.sleep(0.005)
            time.sleep(float(rng.uniform(0, 2 * SLEEP_S)))  # land anywhere between flushes
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                kills += 1
        _, err = proc.communicate(timeout=120)
        after = stored(cache)
        lost = scored(log) - (after - before)
        assert lost >= 0, "a coalition stored before this run was scored again"
        if proc.returncode == 0:
            assert lost == 0 and after == N_COALITIONS
            break
        assert proc.returncode == -signal.SIGKILL, err.decode()
        assert lost <= FLUSH_COALITIONS, (run, lost)
        assert after > before, "the killed run stored nothing"
        before = after
    assert kills == KILLS

    reference = make_game(None)
    resumed = make_game(str(cache))
    masks = sweep(reference.n_players)
    np.testing.assert_array_equal(resumed.loglik(masks), reference.loglik(masks))
    assert resumed.n_forward == 0
    with sqlite3.connect(cache) as db:
        assert db.execute("SELECT COUNT(*) FROM partials").fetchone()[0] == 0


if __name__ == "__main__":
    worker(sys.argv[1], sys.argv[2])
