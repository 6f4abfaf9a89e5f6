"""Sweeps on Ray workers (``lf.Game(..., workers=2)``) equal the in-process prefix executor, survive
a killed worker and a killed driver, and fail with clear errors.

One local Ray cluster (2 CPUs) serves the whole module. Workers run with one torch thread, as the
test process does (tests/conftest.py), so results must be bit-identical. A logging worker (a
:class:`SweepWorker` that appends each (batch, coalition) it computed to a file) lets the tests
count work done twice.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

import layerfast as lf
from layerfast.errors import UsageError
from layerfast.estimators.ablation import ablation_masks
from layerfast.estimators.proximity import proximity_masks
from layerfast.evaluation.ray import cluster as ray_cluster
from layerfast.evaluation.ray import pool as ray_pool
from layerfast.evaluation.ray.worker import SweepWorker
from tests.conftest import make_task
from tests.helpers.tiny_models import tiny_config, tiny_model
from tests.helpers.tiny_tokenizer import tiny_tokenizer

ray = pytest.importorskip("ray", reason="pip install 'layerfast[ray]'")

ROOT = Path(__file__).resolve().parents[3]
LOG_ENV = "LAYERFAST_TEST_WORKER_LOG"


class LoggingWorker(SweepWorker):
    """A SweepWorker that appends one JSON line per unit it computed: batch and coalitions."""

    def run(self, batch, masks, setup=None):
        values, info = super().run(batch, masks, setup)
        path = os.environ.get(LOG_ENV)
        if path:
            keys = ["".join("1" if x else "0" for x in m) for m in np.asarray(masks)]
            with open(path, "a") as f:
                f.write(json.dumps({"batch": int(batch), "keys": keys, "pid": os.getpid()}) + "\n")
        return values, info


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A local Ray cluster of 2 CPUs whose workers can import ``tests`` and log to a file."""
    log = tmp_path_factory.mktemp("ray") / "units.jsonl"
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": str(ROOT), LOG_ENV: str(log)}},
    )
    yield log
    ray.shutdown()


@pytest.fixture
def log(cluster, monkeypatch):
    """The workers' unit log, emptied, with the logging worker in use."""
    cluster.write_text("")
    monkeypatch.setattr(ray_pool, "SweepWorker", LoggingWorker)
    return cluster


def logged(path: Path, pids: set[int] | None = None) -> list[tuple[int, str]]:
    """(batch, coalition key) of every unit row the workers (those of ``pids``, or all)
    computed, in order."""
    pairs = []
    for line in path.read_text().splitlines():
        rec = json.loads(line)
        if pids is None or rec["pid"] in pids:
            pairs += [(rec["batch"], k) for k in rec["keys"]]
    return pairs


def tiny(arch: str):
    tok = tiny_tokenizer()
    return lf.load(tiny_model(arch, vocab_size=len(tok)), tokenizer=tok)


def sweeps(n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "ablation": ablation_masks(n),
        "proximity": proximity_masks(n, 3)[0],
        "random": rng.random((12, n)) < rng.uniform(0.3, 0.9),
    }


@pytest.mark.parametrize("arch", ["llama", "gpt_neox", "qwen2_moe"])
def test_workers_equal_the_in_process_executor(cluster, arch):
    model = tiny(arch)
    local = lf.Game(model, make_task(), batch_tokens=96, progress=False)
    with lf.Game(
        model, make_task(), batch_tokens=96, progress=False, workers=2, threads_per_worker=1
    ) as game:
        for name, masks in sweeps(model.n_players, seed=len(arch)).items():
            got, want = game.loglik(masks), local.loglik(masks)
            assert np.isfinite(got).all(), name
            assert np.array_equal(got, want), f"{arch} {name}: max |diff| {abs(got - want).max()}"
            assert np.array_equal(game(masks), local(masks))
        assert len(local.executor.batches) >= 3  # several batches, so units span batches
        workers = game.pool.workers
        assert len({w["pid"] for w in workers}) == 2
        assert all(w["threads"] == 1 for w in workers)
        busy = [s["units"] for s in game.pool.stats]
        assert min(busy) > 0, f"a worker got no unit: {busy}"


def test_prefix_sharing_is_kept_across_workers(cluster):
    """On a 60-player model's proximity sweep in one batch (so every unit is a cut of the trie),
    the workers run exactly the sublayers the plan counts, within 10% of one process."""
    import torch

    from layerfast.evaluation.ray.partition import plan

    cls, config = tiny_config("llama")
    config.num_hidden_layers = 30
    config.vocab_size = len(tiny_tokenizer())
    torch.manual_seed(0)
    model = lf.load(cls(config).eval(), tokenizer=tiny_tokenizer())
    assert model.n_players == 60
    masks = proximity_masks(model.n_players, 3)[0]
    # one process, every coalition in one trie (chunk: all of them)
    # unstacked (stack_tokens=0): the plan counts the steps of the trie walk
    local = lf.Game(
        model, make_task(), batch_tokens=10_000, stack_tokens=0, progress=False, chunk=len(masks)
    )
    local.loglik(masks)
    one = local.executor.sublayer_evaluations
    assert len(local.executor.batches) == 1  # one batch: only coalition cuts can split it
    with lf.Game(
        model,
        make_task(),
        batch_tokens=10_000,
        stack_tokens=0,
        progress=False,
        workers=2,
        threads_per_worker=1,
    ) as game:
        got = game.loglik(masks)
        steps = sum(s["steps"] for s in game.pool.stats)
        units = sum(s["units"] for s in game.pool.stats)
    assert np.array_equal(got, local.loglik(masks))
    planned = plan(masks, np.ones((len(masks), 1), bool), [1], 2)
    assert units == len(planned) > 2
    assert steps == sum(u.steps for u in planned)
    assert one < steps <= 1.10 * one, (steps, one)


def test_killed_worker_loses_only_its_units_in_flight(log):
    model = tiny("llama")
    masks = sweeps(model.n_players, seed=1)["proximity"]
    local = lf.Game(model, make_task(), batch_tokens=48, progress=False)
    want = local.loglik(masks)
    n_batches = len(local.executor.batches)
    assert n_batches >= 6
    game = lf.Game(
        model, make_task(), batch_tokens=48, progress=False, workers=2, threads_per_worker=1
    )
    game.loglik(masks[:1])  # start the pool
    pool = game.pool
    victim = pool.pids()[0]
    run, seen, killed = pool.run, Counter(), []

    def run_and_kill(units, m, on_result, on_progress=None):
        def hooked(unit, values, worker):
            on_result(unit, values, worker)
            seen[worker] += 1
            if worker == 0 and seen[0] == 2 and not killed:
                os.kill(victim, signal.SIGKILL)
                killed.append(victim)

        return run(units, m, hooked, on_progress)

    pool.run = run_and_kill
    log.write_text("")
    try:
        got = game.loglik(masks)
        assert killed and pool.pids()[0] != victim  # Ray restarted the actor
    finally:
        game.close()
    assert np.array_equal(got, want)
    needed = {(b, k) for b in range(n_batches) for k in set(game_keys(masks)) - first_key(masks)}
    pairs = logged(log)
    twice = [p for p, c in Counter(pairs).items() if c > 1]
    assert set(pairs) == needed
    # work done twice: only what the dead worker had computed but not yet handed back
    assert len(pairs) - len(needed) <= pool.pairs_rerun
    assert pool.units_rerun >= 1
    assert len(twice) <= pool.pairs_rerun
    # the driver stored each needed pair once from a live worker
    assert sum(s["pairs"] for s in pool.stats) == len(needed) + len(masks[:1]) * n_batches


def game_keys(masks: np.ndarray) -> list[str]:
    from layerfast.coalitions import coalition_keys

    return coalition_keys(np.asarray(masks, dtype=bool))


def first_key(masks: np.ndarray) -> set[str]:
    return set(game_keys(masks[:1]))


def test_interrupted_driver_resumes_from_the_cache(log, tmp_path):
    """A driver stopped mid-sweep keeps every unit it received; the rerun computes only the
    rest (nothing twice)."""
    model = tiny("llama")
    masks = sweeps(model.n_players, seed=2)["proximity"]
    cache = tmp_path / "u.sqlite"
    want = lf.Game(model, make_task(), batch_tokens=48, progress=False).loglik(masks)

    class Stop(Exception):
        pass

    first = lf.Game(model, make_task(), batch_tokens=48, progress=False, cache=cache, workers=2)
    first.loglik(masks[:1])
    run, count = first.pool.run, Counter()

    def run_and_stop(units, m, on_result, on_progress=None):
        def hooked(unit, values, worker):
            on_result(unit, values, worker)
            count["units"] += 1
            if count["units"] == 5:
                raise Stop

        return run(units, m, hooked, on_progress)

    first.pool.run = run_and_stop
    log.write_text("")
    with pytest.raises(Stop):
        first.loglik(masks)
    first.close()
    before = set(logged(log))
    log.write_text("")
    with lf.Game(
        model, make_task(), batch_tokens=48, progress=False, cache=cache, workers=2
    ) as second:
        got = second.loglik(masks)
        pids = set(second.pool.pids())
    # the stopped driver's actors are killed asynchronously: a unit they had in flight may
    # still land in the log after it was emptied, so only the second driver's workers count
    after = logged(log, pids)
    assert np.array_equal(got, want)
    n_batches = len(second.executor.batches)
    needed = {(b, k) for b in range(n_batches) for k in set(game_keys(masks)) - first_key(masks)}
    assert len(after) == len(set(after))
    assert set(after) | before >= needed
    # units received before the stop were stored: only those in flight may be computed again
    assert len(set(after) & before) <= ray_pool.IN_FLIGHT * 2 * len(masks)


def test_killed_driver_process_resumes_on_a_joined_cluster(cluster, tmp_path):
    """A driver process (joining the running cluster by address) is SIGKILLed once the cache
    holds finished coalitions; a second driver finishes with only the rest."""
    import sqlite3
    import time

    cache = tmp_path / "u.sqlite"
    address = ray.get_runtime_context().gcs_address
    script = tmp_path / "driver.py"
    script.write_text(DRIVER.format(root=str(ROOT), cache=str(cache), address=address))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, str(script)], env=env, cwd=tmp_path)
    deadline = time.time() + 120
    stored = 0
    while time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
        if cache.exists():
            try:
                with sqlite3.connect(cache) as db:
                    stored = db.execute("SELECT COUNT(*) FROM partials").fetchone()[0]
                    stored += db.execute("SELECT COUNT(*) FROM coalitions").fetchone()[0]
            except sqlite3.OperationalError:
                stored = 0
        if stored >= 40:
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the driver finished before it could be killed"
    done = subprocess.run(
        [sys.executable, str(script)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads((tmp_path / "result.json").read_text())
    model = tiny("llama")
    masks = np.random.default_rng(3).random((160, model.n_players)) < 0.7
    want = lf.Game(model, make_task(), batch_tokens=48, progress=False).loglik(masks)
    assert np.array_equal(np.array(result["loglik"]), want)
    total = len(masks) * result["n_batches"]
    assert result["n_batches_run"] < total  # the second driver reused what the first stored


DRIVER = """
import json, sys
sys.path.insert(0, {root!r})
import numpy as np, torch
torch.set_num_threads(1)
import layerfast as lf
from layerfast.estimators.proximity import proximity_masks
from tests.conftest import make_task
from tests.evaluation.ray.test_ray import sweeps, tiny
model = tiny("llama")
masks = np.random.default_rng(3).random((160, model.n_players)) < 0.7
with lf.Game(model, make_task(), batch_tokens=48, progress=False, cache={cache!r}, workers=2,
             ray_address={address!r}, threads_per_worker=1) as game:
    ll = game.loglik(masks)
    json.dump({{"loglik": ll.tolist(), "n_batches": len(game.executor.batches),
               "n_batches_run": game.n_batches_run}}, open("result.json", "w"))
"""


def test_worker_that_cannot_load_the_model_says_why(cluster, tmp_path):
    model = tiny("llama")
    model.load_spec = {"model": str(tmp_path / "gone"), "dtype": None}
    with pytest.raises(RuntimeError, match=r"Ray worker \d could not load the model.*gone"):
        lf.Game(model, make_task(), progress=False, workers=2)


def test_worker_with_other_weights_is_refused(cluster, tmp_path):
    model = tiny("llama")
    folder = tmp_path / "other"
    other = tiny_model("llama", vocab_size=len(tiny_tokenizer()), seed=5)
    other.save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    model.load_spec = {"model": str(folder), "dtype": None}
    with pytest.raises(RuntimeError, match="holds other weights than the driver's model"):
        lf.Game(model, make_task(), progress=False, workers=2)


def test_option_errors(tiny_llama, tiny_task, monkeypatch):
    for bad in (0, -2, 1.5, True, "2"):
        with pytest.raises(UsageError, match="workers"):
            lf.Game(tiny_llama, tiny_task, workers=bad)
    with pytest.raises(UsageError, match="--ray-address.*needs workers"):
        lf.Game(tiny_llama, tiny_task, ray_address="auto")
    with pytest.raises(UsageError, match="threads_per_worker"):
        lf.Game(tiny_llama, tiny_task, workers=2, threads_per_worker=0)
    with pytest.raises(UsageError, match="gpus_per_worker.*needs workers"):
        lf.Game(tiny_llama, tiny_task, gpus_per_worker=1)
    monkeypatch.setitem(sys.modules, "ray", None)  # as if not installed
    with pytest.raises(UsageError, match=r"pip install 'layerfast\[ray\]'"):
        lf.Game(tiny_llama, tiny_task, workers=2, progress=False)


def test_unreachable_address_fails_fast():
    import time

    start = time.time()
    with pytest.raises(UsageError, match=r"cannot reach the Ray cluster at '127.0.0.1:1'"):
        ray_cluster.check_reachable("127.0.0.1:1")
    with pytest.raises(UsageError, match="expected host:port"):
        ray_cluster.check_reachable("nowhere")
    assert time.time() - start < 10


def test_workers_load_a_folder_as_the_spec_says_offloaded_to_disk(cluster, tmp_path):
    """A model loaded from a folder is loaded again by each worker from its load spec; here the
    spec names a device map that keeps block 0 in memory and offloads the rest to disk, so every
    worker holds a disk-offloaded replica, and the results still equal the in-memory model."""
    from tests.models.test_offload import offload_map

    tok = tiny_tokenizer()
    hf = tiny_model("llama", vocab_size=len(tok))
    hf.save_pretrained(tmp_path / "model")
    tok.save_pretrained(tmp_path / "model")
    model = lf.load(tmp_path / "model")
    assert model.load_spec["model"] == str((tmp_path / "model").resolve())
    masks = sweeps(model.n_players, seed=4)["random"]
    want = lf.Game(model, make_task(), batch_tokens=96, progress=False).loglik(masks)
    model.load_spec.update(
        device_map=offload_map(model.hf_model, tied=False), offload_folder=str(tmp_path / "off")
    )
    with lf.Game(
        model, make_task(), batch_tokens=96, progress=False, workers=2, threads_per_worker=1
    ) as game:
        assert game.pool.spec is not None  # loaded from the folder, not sent by object store
        got = game.loglik(masks)
    assert np.array_equal(got, want)
    assert sorted(p.name for p in (tmp_path / "off").iterdir())[0].startswith("worker-")


def test_a_worker_that_stays_dead_leaves_its_units_to_the_others(cluster, monkeypatch):
    """With no restarts allowed, a killed worker is dropped after its calls fail; the live one
    takes its units and the sweep completes with the same results."""
    monkeypatch.setattr(ray_pool, "MAX_RESTARTS", 0)
    model = tiny("llama")
    masks = sweeps(model.n_players, seed=5)["proximity"]
    want = lf.Game(model, make_task(), batch_tokens=48, progress=False).loglik(masks)
    game = lf.Game(
        model, make_task(), batch_tokens=48, progress=False, workers=2, threads_per_worker=1
    )
    pool = game.pool
    victim = pool.pids()[0]
    run, killed = pool.run, []

    def run_and_kill(units, m, on_result, on_progress=None):
        def hooked(unit, values, worker):
            on_result(unit, values, worker)
            if worker == 0 and not killed:
                os.kill(victim, signal.SIGKILL)
                killed.append(victim)

        return run(units, m, hooked, on_progress)

    pool.run = run_and_kill
    try:
        got = game.loglik(masks)
    finally:
        game.close()
    assert killed and np.array_equal(got, want)
    assert pool.stats[1]["units"] > pool.stats[0]["units"] >= 1


def test_compute_run_sums_the_workers_counts(cluster):
    """shapley's info["compute"]["run"] with workers is every worker's token-sublayer count (it
    was the driver's idle executor's: 0), at least what one process runs for the same sweep."""
    model = tiny("llama")
    local = lf.Game(model, make_task(), batch_tokens=48, progress=False)
    one = lf.shapley(local, method="proximity", window=2).info["compute"]["run"]
    with lf.Game(
        model, make_task(), batch_tokens=48, progress=False, workers=2, threads_per_worker=1
    ) as game:
        res = lf.shapley(game, method="proximity", window=2)
        ran = sum(s["token_steps"] for s in game.pool.stats)
    assert res.info["compute"]["run"] == ran >= one > 0
