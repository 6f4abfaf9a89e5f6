"""kill -9 at random points of a sweep: nothing finished is lost, nothing is silently different.

A worker process (this file run as a module) evaluates an ablation sweep of a tiny Llama with a
small ``batch_tokens`` (8 forward batches) and ``chunk=3`` (3 coalitions in flight), writing an
SQLite cache. It logs one line per (coalition, batch) it scores, with an unbuffered append that
survives SIGKILL. The parent waits until the cache holds a random number of (coalition, batch)
pieces, sends SIGKILL, restarts the worker, and repeats until a run finishes. Then:

(a) the final log-likelihoods and utilities are bit-identical to an uninterrupted run;
(b) every kill lost at most one batch of forward work per coalition in flight: the pieces
    scored in a killed run but not in the cache afterwards all belong to one batch index and
    number at most ``chunk``, and over all runs the pieces scored are exactly the pieces needed
    plus those lost.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
CHUNK = 3
BATCH_TOKENS = 64
SLEEP_S = 0.02  # per scored (coalition, batch): kills land inside batches, not only between
KILLS = {0: 1, 1: 2, 2: 1}  # seed -> kills before the run that is let finish (each process
# start costs seconds of imports, so the test keeps to eight processes in all)


# --- the worker ------------------------------------------------------------------------------
def worker(cache: str | None, log: str, out: str) -> None:
    import torch

    torch.set_num_threads(1)
    import layerfast as lf
    from layerfast.estimators.ablation import ablation_masks
    from tests.conftest import make_task
    from tests.helpers.tiny_models import tiny_model
    from tests.helpers.tiny_tokenizer import tiny_tokenizer

    tok = tiny_tokenizer()
    model = lf.load(tiny_model("llama", vocab_size=len(tok)), tokenizer=tok)
    game = lf.Game(
        model,
        make_task(),
        utility="acc_norm",
        cache=cache,
        batch_tokens=BATCH_TOKENS,
        chunk=CHUNK,
        progress=False,
    )
    ex = game.executor
    index = {id(b): i for i, b in enumerate(ex.batches)}
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    score = ex.score

    def logged_score(state, batch):  # called once per (coalition, batch) the executor runs
        values = score(state, batch)
        os.write(fd, f"{index[id(batch)]}\n".encode())
        if cache is not None:
            time.sleep(SLEEP_S)
        return values

    ex.score = logged_score
    masks = ablation_masks(model.n_players)
    with open(out + ".meta.json", "w") as f:
        json.dump({"n_batches": len(ex.batches), "n_coalitions": len(masks)}, f)
    ll, u = game.loglik(masks), game(masks)
    np.save(out + ".loglik.npy", ll)
    np.save(out + ".utility.npy", u)


# --- the parent ------------------------------------------------------------------------------
def start(cache: Path | None, log: Path, out: Path) -> subprocess.Popen:
    args = [sys.executable, "-m", "tests.evaluation.test_kill_resume", str(cache), str(log)]
    return subprocess.Popen([*args, str(out)], cwd=ROOT, stderr=subprocess.PIPE)


def stored(cache: Path, n_batches: int) -> Counter:
    """(batch index -> pieces stored): per-batch partials plus every batch of finished rows."""
    if not cache.exists():
        return Counter()
    try:
        with sqlite3.connect(cache, timeout=60) as db:
            done = db.execute("SELECT COUNT(*) FROM coalitions").fetchone()[0]
            parts = db.execute("SELECT batch, COUNT(*) FROM partials GROUP BY batch").fetchall()
    except sqlite3.OperationalError:  # the worker has not created its tables yet
        return Counter()
    counts = Counter({b: done for b in range(n_batches)})
    counts.update(dict(parts))
    return +counts


def scored(log: Path) -> Counter:
    return Counter(int(line) for line in log.read_text().split()) if log.exists() else Counter()


def read_meta(out: Path, proc: subprocess.Popen) -> dict:
    meta = Path(str(out) + ".meta.json")
    while not meta.exists():
        assert proc.poll() is None, proc.stderr.read().decode()
        time.sleep(0.01)
    time.sleep(0.05)
    return json.loads(meta.read_text())


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("reference")
    proc = start(None, tmp / "log", tmp / "out")
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err.decode()
    return (
        np.load(tmp / "out.loglik.npy"),
        np.load(tmp / "out.utility.npy"),
        json.loads((tmp / "out.meta.json").read_text()),
    )


@pytest.mark.parametrize("seed", sorted(KILLS))
def test_sigkill_loses_at_most_one_batch_per_coalition_in_flight(seed, tmp_path, uninterrupted):
    ref_ll, ref_u, meta = uninterrupted
    n_batches, n_coalitions = meta["n_batches"], meta["n_coalitions"]
    total = n_batches * n_coalitions
    assert n_batches >= 6 and n_coalitions > CHUNK  # several batches and several chunks
    rng = np.random.default_rng(seed)
    cache, out = tmp_path / "utilities.sqlite", tmp_path / "out"
    before, all_scored, all_lost, kills = Counter(), Counter(), 0, 0
    for run in range(KILLS[seed] + 1):
        log = tmp_path / f"run{run}.log"
        proc = start(cache, log, out)
        if run < KILLS[seed]:
            have = sum(before.values())
            target = have + int(rng.integers(1, max(2, (total - have) // 2)))
            read_meta(out, proc)
            while proc.poll() is None and sum(stored(cache, n_batches).values()) < target:
                time.sleep(0.005)
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                kills += 1
        _, err = proc.communicate(timeout=300)
        after = stored(cache, n_batches)
        ran = scored(log)
        if proc.returncode == 0:
            assert after == Counter({b: n_coalitions for b in range(n_batches)})
        else:
            assert proc.returncode == -signal.SIGKILL, err.decode()
        # nothing stored before this run was scored again, and what it scored but did not
        # store is one batch of the coalitions in flight at most
        lost = {b: ran[b] - (after[b] - before[b]) for b in range(n_batches)}
        assert all(v >= 0 for v in lost.values()), (lost, ran, before, after)
        lost = {b: v for b, v in lost.items() if v}
        assert len(lost) <= 1 and sum(lost.values()) <= CHUNK, (run, lost)
        if proc.returncode == 0:
            assert not lost
            break
        all_scored += ran
        all_lost += sum(lost.values())
        before = after
    else:
        pytest.fail("the worker never finished")
    assert kills >= 1
    all_scored += ran
    assert sum(all_scored.values()) == total + all_lost  # recomputed work is exactly the loss

    # (a) bit-identical to the uninterrupted run, and no piece is left behind
    np.testing.assert_array_equal(np.load(str(out) + ".loglik.npy"), ref_ll)
    np.testing.assert_array_equal(np.load(str(out) + ".utility.npy"), ref_u)
    with sqlite3.connect(cache) as db:
        assert db.execute("SELECT COUNT(*) FROM partials").fetchone()[0] == 0
        assert db.execute("SELECT COUNT(*) FROM coalitions").fetchone()[0] == n_coalitions


if __name__ == "__main__":
    cache_arg, log_arg, out_arg = sys.argv[1:4]
    worker(None if cache_arg == "None" else cache_arg, log_arg, out_arg)
