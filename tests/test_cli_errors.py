"""Every mistake a user can make on the command line ends with exit 2 and one line that names the
culprit (the flag, file, line or value), never a traceback (issue 13, items 7 and 8).

One table, :data:`CASES`: each row builds its argv from the tiny model folder, task file and a
scratch folder, and lists the words the message must contain. Rows marked ``before_load`` must
fail before any model loads (``lf.load`` is replaced by a function that fails the test) and
before ``--out`` is created.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

import layerfast
import layerfast.models
from layerfast import cli
from tests.test_cli import save_tiny_model, write_task_file


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, model_factory, tiny_tokenizer_fixture):
    folder = tmp_path_factory.mktemp("model") / "tiny-llama"
    return save_tiny_model(folder, model_factory, tiny_tokenizer_fixture)


@pytest.fixture(scope="module")
def task_file(tmp_path_factory):
    return write_task_file(tmp_path_factory.mktemp("task") / "tiny6.jsonl")


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
    if case.before_load:
        monkeypatch.setattr(layerfast.models, "load", _no_load)
        monkeypatch.setattr(layerfast, "load", _no_load, raising=False)
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
