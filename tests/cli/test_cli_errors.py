"""Every mistake a user can make on the command line ends with exit 2 and one line that names the
culprit (the flag, file, line or value), never a traceback (issue 13, items 7 and 8).

One table, :data:`CASES`: each row builds its argv from the tiny model folder, task file and a
scratch folder, and lists the words the message must contain. Rows marked ``before_load`` must
fail before any model loads (``lf.load`` is replaced by a function that fails the test) and
before ``--out`` is created.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

import layerfast
import layerfast.models
from layerfast import cli
from tests.cli.test_cli import ROOT, write_task_file


@dataclass
class Where:
    """What a row's argv is built from."""

    model: Path
    task: Path
    tmp: Path

    @property
    def out(self) -> Path:
        return self.tmp / "out"

    def sweep(self, verb: str, *extra, model=None, task=None, out=None) -> list:
        """``VERB --model M --task T --out O --no-progress EXTRA``; keywords replace M, T, O."""
        return [
            verb,
            "--model",
            model or self.model,
            "--task",
            task or self.task,
            "--out",
            out or self.out,
            "--no-progress",
            *extra,
        ]

    def avss(self, *extra) -> list:
        return ["avss", "--model", self.model, "--out", self.out, "--no-progress", *extra]

    def file(self, name: str, data: bytes | str) -> Path:
        path = self.tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(data, str):
            data = data.encode()
        path.write_bytes(data)
        return path


@dataclass
class Case:
    id: str
    argv: Callable[[Where], list]
    words: Callable[[Where], list[str]]  # the message contains each of them
    before_load: bool = True
    env: dict[str, str] | None = None  # environment variables set for the row


GOOD_ROW = (
    '{"context": "Q: What is the capital of Peru?\\nA:", "choices": ["Lima", "Quito"], "gold": 0}'
)


def latin1_rows() -> bytes:
    """Two items; line 2 holds a Latin-1 byte (0xfa), which is not UTF-8."""
    return (GOOD_ROW + "\n" + GOOD_ROW.replace("Peru", "Per\xfa") + "\n").encode("latin-1")


def duplicate_rows() -> str:
    """Two items; line 2 lists the choice "Lima" twice."""
    return GOOD_ROW + "\n" + GOOD_ROW.replace('"Quito"', '"Lima"') + "\n"


def sqlite_file(where: Where, name: str, corrupt: bool) -> Path:
    """A real SQLite database, truncated to half its size when ``corrupt``."""
    path = where.tmp / name
    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE t (x BLOB)")
        db.executemany("INSERT INTO t VALUES (?)", [(b"x" * 500,)] * 200)
    db.close()
    if corrupt:
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    return path


def flag_case(verb: str, flag: str, value: str, *extra: str) -> Case:
    """A numeric (or named) flag out of range: the message names the flag and the value."""
    if verb == "avss":
        argv = lambda w: w.avss(flag, value, *extra)  # noqa: E731
    else:
        argv = lambda w: w.sweep(verb, flag, value, *extra)  # noqa: E731
    return Case(f"{verb}{flag}={value}", argv, lambda w: [flag, value])


def config_only_folder(where: Where, model_type: str | None = None) -> Path:
    """A model folder with config.json (optionally another model_type) and no weights."""
    folder = where.tmp / (model_type or "no-weights")
    folder.mkdir(parents=True, exist_ok=True)
    config = json.loads((where.model / "config.json").read_text())
    if model_type is not None:
        config["model_type"] = model_type
        config["architectures"] = ["BertModel"]
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def weights_without_tokenizer(where: Where) -> Path:
    folder = where.tmp / "no-tokenizer"
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "model.safetensors"):
        shutil.copy(where.model / name, folder / name)
    return folder


CASES = [
    # --- the cache file and --out ---------------------------------------------------------------
    Case(
        "cache-not-sqlite",
        lambda w: w.sweep("ablate", "--cache", w.file("notes.txt", "my notes\n")),
        lambda w: ["--cache", str(w.tmp / "notes.txt"), "not an SQLite database"],
    ),
    Case(
        "cache-corrupted",
        lambda w: w.sweep("ablate", "--cache", sqlite_file(w, "c.sqlite", corrupt=True)),
        lambda w: ["--cache", str(w.tmp / "c.sqlite"), "corrupted"],
    ),
    Case(
        "cache-is-a-folder",
        lambda w: w.sweep("ablate", "--cache", w.tmp),
        lambda w: ["--cache", str(w.tmp), "is a folder"],
    ),
    Case(
        "default-cache-in-out-not-sqlite",
        lambda w: w.sweep("ablate") if w.file("out/utilities.sqlite", b"\0junk" * 9) else [],
        lambda w: [str(w.out / "utilities.sqlite"), "not an SQLite database"],
    ),
    Case(
        "out-is-a-file",
        lambda w: w.sweep("ablate", out=w.file("out", "x")),
        lambda w: ["--out", str(w.out), "is a file"],
    ),
    Case(
        "out-below-a-file",
        lambda w: w.sweep("ablate", out=w.file("plain", "x") / "sub"),
        lambda w: ["--out", str(w.tmp / "plain"), "not a folder"],
    ),
    Case(
        "out-not-writable",
        lambda w: w.sweep("ablate", out="/proc/layerfast-test/out"),
        lambda w: ["--out", "/proc", "cannot write"],
    ),
    Case(
        "prune-save-to-a-file",
        lambda w: w.sweep("prune", "--save", w.file("pruned", "x")),
        lambda w: ["--save", str(w.tmp / "pruned"), "existing file"],
    ),
    # --- task and text files --------------------------------------------------------------------
    Case(
        "task-not-utf8",
        lambda w: w.sweep("ablate", task=w.file("latin1.jsonl", latin1_rows())),
        lambda w: [f"{w.tmp / 'latin1.jsonl'}:2", "not UTF-8"],
    ),
    Case(
        "task-duplicate-choices",
        lambda w: w.sweep("ablate", task=w.file("dup.jsonl", duplicate_rows())),
        lambda w: [f"{w.tmp / 'dup.jsonl'}:2", "'Lima'", "choices"],
    ),
    Case(
        "task-is-a-folder",
        lambda w: w.sweep("ablate", task=w.tmp),
        lambda w: [str(w.tmp), "folder"],
    ),
    Case(
        "texts-not-utf8",
        lambda w: w.avss("--texts", w.file("t.txt", "one\ntwo \xe9\n".encode("latin-1"))),
        lambda w: [f"{w.tmp / 't.txt'}:2", "not UTF-8"],
    ),
    Case(
        "texts-missing",
        lambda w: w.avss("--texts", w.tmp / "nothing.txt"),
        lambda w: ["--texts", str(w.tmp / "nothing.txt")],
    ),
    # --- numbers out of range, named values -----------------------------------------------------
    *[
        flag_case(verb, flag, value, *extra)
        for verb, flag, value, *extra in [
            ("ablate", "--limit", "0"),
            ("ablate", "--limit", "-3"),
            ("ablate", "--seed", "-1"),
            ("ablate", "--batch-tokens", "0"),
            ("ablate", "--stack-tokens", "-1"),
            ("shapley", "--stack-tokens", "lots"),
            ("ablate", "--margin", "-0.1"),
            ("ablate", "--margin", "nan"),
            ("ablate", "--threads", "0"),
            ("ablate", "--threads", "many"),
            ("ablate", "--dtype", "fp8"),
            ("shapley", "--window", "0"),
            ("shapley", "--budget", "0"),
            ("shapley", "--budgets", "12,0", "--method", "permutation"),
            ("report", "--window", "-1"),
            ("avss", "--n-texts", "0"),
            ("avss", "--max-length", "0"),
            ("avss", "--eps", "0"),
            ("avss", "--eps", "inf"),
            ("avss", "--stats-dtype", "fp8"),
            ("prune", "--fraction", "1.0"),
            ("prune", "--fraction", "-0.1"),
            ("prune", "--n-texts", "-1"),
            ("eavss", "--eps", "-1"),
            ("eavss", "--k", "0"),
            ("eavss", "--n-boot", "0"),
            ("eavss", "--steps", "0", "--finetune"),
            ("eavss", "--batch-size", "0", "--finetune"),
            ("eavss", "--lr", "0", "--finetune"),
            ("eavss", "--lr", "-0.001", "--finetune"),
            ("eavss", "--weight", "-1", "--finetune"),
            ("eavss", "--temperature", "0", "--finetune"),
            ("eavss", "--n-random", "-1", "--finetune"),
            ("eavss", "--split", "0.5,0.5", "--finetune"),
            ("eavss", "--split", "0.6,0.3,0.3", "--finetune"),
            ("eavss", "--utility", "margin"),
        ]
    ],
    # --- cheap checks that need the block count: after loading, before any pass ------------------
    Case(
        "eavss-k-above-blocks",
        lambda w: w.sweep("eavss", "--k", "4"),
        lambda w: ["--k", "4", "3 blocks"],
        before_load=False,
    ),
    Case(
        "prune-fraction-removes-every-block",
        lambda w: w.sweep("prune", "--fraction", "0.9", "--texts", "pydoc"),
        lambda w: ["--fraction", "0.9", "3 blocks"],
        before_load=False,
    ),
    # --- model folders, device, tokenizer (the fixes of the first three are in models/) ---------
    Case(
        "model-config-without-weights",
        lambda w: w.sweep("ablate", model=config_only_folder(w)),
        lambda w: [str(w.tmp / "no-weights"), "no weights"],
        before_load=False,
    ),
    Case(
        "model-unsupported-architecture",
        lambda w: w.sweep("ablate", model=config_only_folder(w, "bert")),
        lambda w: [str(w.tmp / "bert"), "'bert'"],
        before_load=False,
    ),
    Case(
        "device-unknown",
        lambda w: w.sweep("ablate", "--device", "foo"),
        lambda w: ["--device", "'foo'"],
        before_load=False,
    ),
    Case(
        "model-without-tokenizer",
        lambda w: w.sweep("ablate", model=weights_without_tokenizer(w)),
        lambda w: ["no-tokenizer", "--tokenizer"],
        before_load=False,
    ),
    Case(
        "tokenizer-folder-missing",
        lambda w: w.sweep("ablate", "--tokenizer", w.tmp / "tok"),
        lambda w: ["--tokenizer", str(w.tmp / "tok"), "does not exist"],
    ),
    Case(
        "tokenizer-folder-without-tokenizer",
        lambda w: w.sweep("ablate", "--tokenizer", w.tmp),
        lambda w: ["--tokenizer", str(w.tmp)],
        before_load=False,
    ),
    # --- scale-out and placement (issue 16) ----------------------------------------------------
    flag_case("shapley", "--workers", "0"),
    flag_case("report", "--item-bootstrap", "1"),
    flag_case("ablate", "--gpus-per-worker", "0", "--workers", "2"),
    Case(
        "ray-address-without-workers",
        lambda w: w.sweep("shapley", "--ray-address", "auto"),
        lambda w: ["--ray-address", "needs --workers >= 2"],
    ),
    Case(
        "device-and-device-map",
        lambda w: w.sweep("ablate", "--device", "cpu", "--device-map", "auto"),
        lambda w: ["--device", "--device-map"],
    ),
    Case(
        "max-memory-without-device-map",
        lambda w: w.sweep("ablate", "--max-memory", "cpu=1GiB"),
        lambda w: ["--max-memory", "need device_map= (--device-map)"],
    ),
    Case(
        "max-memory-malformed",
        lambda w: w.sweep("ablate", "--device-map", "auto", "--max-memory", "lots"),
        lambda w: ["--max-memory", "'lots'", "DEVICE=SIZE"],
    ),
    Case(
        "device-map-json-not-an-object",
        lambda w: w.sweep("ablate", "--device-map", w.file("map.json", "[1, 2]")),
        lambda w: ["--device-map", "map.json", "object"],
    ),
    # --- argparse's own errors are exit 2 with the flag named too --------------------------------
    Case(
        "argparse-type", lambda w: w.sweep("ablate", "--limit", "ten"), lambda w: ["--limit", "ten"]
    ),
    # --- found by a new user (issue: CLI verbs register their own parsers) ----------------------
    Case(  # every model is found before the first pair is computed
        "report-models-checked-up-front",
        lambda w: ["report", "--models", f"{w.model},nope", "--task", w.task, "--out", w.out],
        lambda w: ["--models", "'nope'", "not in the HF cache", "HF_HUB_OFFLINE=1"],
        env={"HF_HUB_OFFLINE": "1"},
    ),
    Case(
        "report-models-not-a-hub-id",
        lambda w: ["report", "--models", f"{w.model},no/such/model", "--out", w.out],
        lambda w: ["--models", "'no/such/model'", "nor a model hub id"],
    ),
    Case(
        "report-model-and-models",
        lambda w: w.sweep("report", "--models", w.model),
        lambda w: ["--model", "--models", "not both"],
    ),
    Case(
        "report-task-and-tasks",
        lambda w: w.sweep("report", "--tasks", w.task),
        lambda w: ["--task", "--tasks", "not both"],
    ),
    Case(
        "max-memory-bad-size",
        lambda w: w.sweep("ablate", "--device-map", "auto", "--max-memory", "0=abc"),
        lambda w: ["--max-memory", "'abc' is not a size"],
    ),
    Case(
        "ray-address-malformed",
        lambda w: w.sweep("shapley", "--workers", "2", "--ray-address", "localhost"),
        lambda w: ["--ray-address", "'localhost'", "host:port"],
    ),
    Case(
        "ray-address-unreachable",
        lambda w: w.sweep("shapley", "--workers", "2", "--ray-address", "127.0.0.1:9"),
        lambda w: ["127.0.0.1:9", "--ray-address", "cannot reach"],
    ),
    flag_case("ablate", "--num-fewshot", "-1"),
    Case(
        "bench-kernel-bytes-above-free-memory",
        lambda w: (
            ["bench", "--model", w.model, "--only", "kernels", "--kernel-bytes", "1TiB"]
            + ["--out", w.out, "--no-progress"]
        ),
        lambda w: ["--kernel-bytes", "1 TiB", "free"],
        before_load=False,
    ),
    Case(
        "unknown-flag-names-the-verb",
        lambda w: w.sweep("ablate", "--windw", "3"),
        lambda w: ["--windw", "layerfast ablate --help"],
    ),
]


def _no_load(*args, **kwargs):
    raise AssertionError("a model was loaded although the flags were already known to be bad")


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_user_error_is_one_line_and_exit_2(
    case, capsys, monkeypatch, model_dir, task_file, tmp_path
):
    where = Where(model_dir, task_file, tmp_path)
    argv = [str(a) for a in case.argv(where)]
    out_existed = where.out.exists()
    for name, value in (case.env or {}).items():
        monkeypatch.setenv(name, value)
    if case.before_load:  # layerfast.load first: its lazy lookup must see the real one
        monkeypatch.setattr(layerfast, "load", _no_load, raising=False)
        monkeypatch.setattr(layerfast.models, "load", _no_load)
    try:
        rc = cli.main(argv)
    except SystemExit as e:  # argparse's own errors (a value of the wrong type)
        rc = e.code
    _, err = capsys.readouterr()
    assert rc == 2, err
    assert "Traceback" not in err, err
    verb = argv[0]
    lines = [line for line in err.splitlines() if line.startswith(f"layerfast {verb}: error:")]
    if not lines:  # argparse: "usage: ...", then "layerfast VERB: error: ..."
        lines = [line for line in err.splitlines() if ": error:" in line]
    assert len(lines) == 1, err
    message = lines[0]
    assert message == err.rstrip().splitlines()[-1], "the error must be the last line"
    for word in case.words(where):
        assert word in message, (word, message)
    if case.before_load and not out_existed:
        assert not where.out.exists(), "--out was created although the flags were bad"


def test_report_with_a_smooth_utility_has_no_chance_line_and_exits_0(
    capsys,
    model_dir,
    task_file,
    tmp_path,
):
    """A smooth utility (margin, logprob) has no chance level: report writes every file, says
    "chance n/a" and exits 0 (it wrote every file and then crashed on the chance level before)."""
    where = Where(model_dir, task_file, tmp_path)
    rc = cli.main([str(a) for a in where.sweep("report", "--utility", "margin")])
    stdout, err = capsys.readouterr()
    assert rc == 0, err
    assert "Traceback" not in err
    assert "(chance n/a)" in stdout
    md = (where.out / "report.md").read_text()
    assert "chance = n/a" in md
    data = json.loads((where.out / "ablation.json").read_text())
    assert data["chance"] is None and data["cornerstones"] == []


# --- model names checked without loading (report --models) --------------------------------------
def hub_snapshot(cache: Path, repo_id: str, model_dir: Path, weights: bool = True) -> Path:
    """A model hub snapshot of ``model_dir`` in the HF cache layout under ``cache``."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    folder = repo / "snapshots" / "0123abcd"
    folder.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    names = ["config.json", "tokenizer.json", "tokenizer_config.json"]
    for name in names + (["model.safetensors"] if weights else []):
        if (model_dir / name).exists():
            shutil.copy(model_dir / name, folder / name)
    return folder


def test_model_names_are_found_without_loading(model_dir, tmp_path, monkeypatch):
    """A folder, a packaged name and a cached hub id pass; offline, an uncached id or a cached
    one without weights fail; online, an id the hub lacks fails (the hub is asked for its
    config.json only); nothing loads."""
    import huggingface_hub

    from layerfast.cli.model_specs import check_model_spec
    from layerfast.errors import UsageError

    monkeypatch.setattr(layerfast.models, "load", _no_load)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    hub_snapshot(tmp_path / "hub", "org/tiny", model_dir)
    hub_snapshot(tmp_path / "hub", "org/half", model_dir, weights=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for spec in (str(model_dir), "smollm2-135m", "Gemma-3-270M", "org/tiny"):
        check_model_spec(spec, flag="--models")
    for spec, words in (
        ("org/none", "'org/none' at revision 'main' is not in the HF cache"),
        ("org/half", "cached without all its weights"),
        ("a//b", "nor a model hub id"),
    ):
        with pytest.raises(UsageError, match=words):
            check_model_spec(spec, flag="--models")
    with pytest.raises(UsageError, match="--revision v2 names a model hub commit"):
        check_model_spec(str(model_dir), revision="v2")

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    asked = []

    def file_exists(repo_id, filename, revision=None):
        asked.append((repo_id, filename, revision))
        return repo_id == "org/remote"

    monkeypatch.setattr(huggingface_hub, "file_exists", file_exists)
    check_model_spec("org/remote", revision="v1")
    with pytest.raises(UsageError, match="nor on the hub"):
        check_model_spec("org/gone")
    assert asked == [("org/remote", "config.json", "v1"), ("org/gone", "config.json", "main")]


# --- Ctrl-C --------------------------------------------------------------------------------------
INTERRUPTED = re.compile(
    r"^layerfast (\w+): interrupted; the coalitions evaluated so far are kept in (.+): rerun "
    r"the same command to resume$"
)


def test_ctrl_c_is_one_line_and_exit_130(capsys, monkeypatch, model_dir, task_file, tmp_path):
    """Ctrl-C in a sweep: no traceback, the one line names the cache to resume from, the game's
    workers are stopped (Game.close), and the rerun resumes."""
    import layerfast.cli.sweeps as sweeps

    closed = []
    monkeypatch.setattr(layerfast.Game, "close", lambda self: closed.append(self))

    def interrupt(game, **kwargs):
        game(game.full_mask())  # some work is done and cached, then Ctrl-C
        raise KeyboardInterrupt

    monkeypatch.setattr(sweeps, "ablate", interrupt)
    where = Where(model_dir, task_file, tmp_path)
    rc = cli.main([str(a) for a in where.sweep("ablate")])
    _, err = capsys.readouterr()
    assert rc == 130, err
    assert "Traceback" not in err
    match = INTERRUPTED.match(err.rstrip().splitlines()[-1])
    assert match and match.groups() == ("ablate", str(where.out / "utilities.sqlite")), err
    assert len(closed) == 1
    with sqlite3.connect(where.out / "utilities.sqlite") as db:
        assert db.execute("SELECT COUNT(*) FROM coalitions").fetchone()[0] == 1
    db.close()


def test_ctrl_c_in_a_multi_report_and_in_avss(capsys, monkeypatch, model_dir, task_file, tmp_path):
    import layerfast.cli.statistics as statistics
    import layerfast.cli.sweeps as sweeps

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(sweeps, "setup", interrupt)
    out = tmp_path / "grid"
    argv = ["report", "--models", model_dir, "--task", task_file, "--out", out]
    rc = cli.main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert rc == 130 and "Traceback" not in err
    assert err.splitlines()[-1].endswith(
        f"kept in each pair's cache under {out}/<model>/<task>/: rerun the same command to resume"
    )
    monkeypatch.setattr(statistics, "load_model", interrupt)
    rc = cli.main(["avss", "--model", str(model_dir), "--out", str(tmp_path / "a")])
    err = capsys.readouterr().err
    assert rc == 130
    assert err == "layerfast avss: interrupted; rerun the same command to start again\n"


@pytest.mark.parametrize("workers", [1, 2])
def test_sigint_stops_a_running_sweep_with_exit_130(model_dir, tmp_path, workers):
    """``layerfast ablate`` in a subprocess, sent SIGINT once its sweep runs (a sweep far longer
    than the wait): exit 130, one line naming the cache (which holds what was done), no
    traceback, and with ``--workers 2`` no process of its Ray session left."""
    if workers > 1:
        pytest.importorskip("ray")
    task = tmp_path / "many.jsonl"
    rows = [json.loads(line) for line in Path(write_task_file(tmp_path / "t.jsonl")).open()]
    task.write_text(
        "".join(
            json.dumps({**r, "context": f"{k} {r['context']}", "id": f"{k}-{r['id']}"}) + "\n"
            for k in range(500)
            for r in rows
        )
    )
    out = tmp_path / "out"
    argv = ["ablate", "--model", model_dir, "--task", task, "--out", out, "--no-progress"]
    argv += ["--batch-tokens", "32", "--workers", workers]
    proc = subprocess.Popen(
        [sys.executable, "-m", "layerfast.cli", *map(str, argv)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        # a shell's background job inherits SIGINT ignored, and Python then keeps ignoring it
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        line = proc.stdout.readline()  # "model ... | task ... | loaded in ...": the sweep starts
        assert line.startswith("model "), line + proc.stderr.read()
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    match = INTERRUPTED.match(err.rstrip().splitlines()[-1])
    assert match and match.group(2) == str(out / "utilities.sqlite"), err
    assert (out / "utilities.sqlite").is_file() and not (out / "ablation.json").exists()
    if workers > 1:  # Ray names its session after the driver's pid
        time.sleep(2)
        ps = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
        left = [p for p in ps.splitlines() if f"_{proc.pid}/" in p or f"_{proc.pid} " in p]
        assert not left, left


def test_a_read_only_cache_is_not_called_corrupted(
    capsys, model_dir, task_file, tmp_path, monkeypatch
):
    """A sound cache this process may not write (a read-only file or file system): one line that
    says it cannot be written and why, never "corrupted" or "delete it" (issue 27, item 2)."""
    import numpy as np

    from layerfast.evaluation import cache_file
    from layerfast.evaluation.cache import UtilityCache

    cache = tmp_path / "ro.sqlite"
    UtilityCache(cache).put(("m", "r", "cpu"), "11", np.zeros(2))
    real_access = os.access

    def access(path, mode, **kw):  # what access(2) answers for a read-only file
        if Path(path) == cache and mode & os.W_OK:
            return False
        return real_access(path, mode, **kw)

    monkeypatch.setattr(cache_file.os, "access", access)
    where = Where(model_dir, task_file, tmp_path)
    rc = cli.main([str(a) for a in where.sweep("ablate", "--cache", cache)])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err, err
    line = err.strip().splitlines()[-1]
    assert "cannot be written" in line and str(cache) in line
    assert "corrupted" not in line.replace("not corrupted", "") and "delete" not in line
