"""The ``layerfast`` command line on a tiny random Llama saved as a local HF folder.

Most verbs run in-process through ``layerfast.cli.main``; one run goes through
``python -m layerfast.cli`` in a subprocess to check the entry point itself. Every JSON file a
verb writes is read with a strict parser (no bare NaN or Infinity).
"""

from __future__ import annotations

import ast
import csv
import itertools
import json
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import tqdm.std

import layerfast as lf
import layerfast.progress
from layerfast import cli
from layerfast.cli.values import key_value
from layerfast.estimators import proximity_cost, shapley
from tests.conftest import TINY_ITEMS

N = 6  # players of the tiny 3-block Llama
ROOT = Path(__file__).resolve().parents[2]


def save_tiny_model(folder: Path, model_factory, tokenizer) -> Path:
    """A tiny random Llama + tokenizer saved in ``folder`` with ``save_pretrained``.

    The weights (not the norms) are scaled up 30x: at the default init scale every choice gets
    almost the same log-prob and acc_norm is flat, so no ablation would change anything.
    """
    model = model_factory(tokenizer, 0)
    with torch.no_grad():
        for name, p in model.hf_model.named_parameters():
            if "norm" not in name:
                p.mul_(30.0)
    model.hf_model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def write_task_file(path: Path) -> Path:
    """The first 6 tiny items as a JSONL task file at ``path``."""
    with open(path, "w", encoding="utf-8") as f:
        for i, (context, choices, gold) in enumerate(TINY_ITEMS[:6]):
            f.write(
                json.dumps({"context": context, "choices": choices, "gold": gold, "id": f"t{i}"})
                + "\n"
            )
    return path


def strict_json(path: Path):
    """Parse ``path`` as strict JSON: the constants NaN, Infinity and -Infinity raise."""

    def refuse(name):
        raise ValueError(f"{path.name} holds the non-standard JSON constant {name}")

    return json.loads(path.read_text(), parse_constant=refuse)


def check_json_files(out: Path) -> list[str]:
    """Every ``*.json`` in ``out`` parses as strict JSON; returns their names."""
    names = sorted(p.name for p in out.glob("*.json"))
    for name in names:
        strict_json(out / name)
    return names


BAR = re.compile(r"(evaluating|shapley|statistics|EAVSS statistics|fine-tune blocks [^:]*): ")


def bar_redraws(stderr: str) -> int:
    """Redraws of layerfast's progress bars in captured stderr (tqdm separates them with \\r;
    the "Loading weights" bar of transformers is not ours and not counted)."""
    return sum(1 for part in re.split(r"[\r\n]", stderr) if BAR.match(part))


def run(capsys, *argv):
    """``layerfast ARGV`` in-process -> (exit code, stdout, stderr)."""
    rc = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def sweep(verb, model_dir, task_file, out, *extra):
    return [verb, "--model", model_dir, "--task", task_file, "--out", out, "--no-progress", *extra]


def direct_game(model_dir, task_file, utility="acc_norm"):
    return lf.Game(lf.load(model_dir), lf.tasks.load(task_file), utility=utility, progress=False)


def record_games(monkeypatch):
    """Every lf.Game the CLI builds; ``Game.n_forward`` counts the coalitions it really ran."""
    games = []
    original = lf.Game.__init__

    def init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        games.append(self)

    monkeypatch.setattr(lf.Game, "__init__", init)
    return games


def cached_rows(path: Path) -> int:
    with sqlite3.connect(path) as db:
        return db.execute("SELECT COUNT(*) FROM coalitions").fetchone()[0]


# --- ablate --------------------------------------------------------------------------------------
def test_ablate(capsys, model_dir, task_file, tmp_path):
    out = tmp_path / "abl"
    rc, stdout, err = run(capsys, *sweep("ablate", model_dir, task_file, out))
    assert rc == 0, err
    assert check_json_files(out) == ["ablation.json"]
    for name in ("ablation.json", "ablation.csv", "ablation.png", "utilities.sqlite"):
        assert (out / name).is_file(), name
    assert "ablation.png" in stdout and "cornerstones" in stdout

    data = strict_json(out / "ablation.json")
    game = direct_game(model_dir, task_file)
    assert data["players"] == game.players == ["attn0", "mlp0", "attn1", "mlp1", "attn2", "mlp2"]
    assert data["full"] == pytest.approx(game(game.full_mask())[0], abs=1e-12)
    expected = lf.ablate(game)
    np.testing.assert_allclose(data["values"], expected.values, atol=1e-12)
    assert data["chance"] == pytest.approx(game.chance)
    assert data["cornerstones"] == expected.cornerstones
    assert data["n_items"] == 6 and data["utility"] == "acc_norm" and data["dtype"] == "float32"
    # the command recorded is this call's argv, not the test runner's sys.argv
    assert data["command"].startswith("layerfast ablate --model ")
    assert str(task_file) in data["command"]

    with open(out / "ablation.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == N
    assert [r["player"] for r in rows] == data["players"]
    np.testing.assert_allclose([float(r["utility_without"]) for r in rows], data["values"])
    assert (out / "ablation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_ablate_resumes_without_forward_passes(capsys, model_dir, task_file, tmp_path, monkeypatch):
    games = record_games(monkeypatch)
    out = tmp_path / "resume"
    argv = sweep("ablate", model_dir, task_file, out, "--utility", "margin")
    assert run(capsys, *argv)[0] == 0
    assert games[0].n_forward == N + 1  # v(N) and v(N \ {l}) for every l
    assert cached_rows(out / "utilities.sqlite") == N + 1
    first = strict_json(out / "ablation.json")

    assert run(capsys, *argv)[0] == 0
    assert len(games) == 2
    assert games[1].n_forward == 0, "the second run must be served from OUT/utilities.sqlite"
    assert cached_rows(out / "utilities.sqlite") == N + 1
    second = strict_json(out / "ablation.json")
    assert second["values"] == first["values"] and second["full"] == first["full"]

    # the cache holds log-likelihoods, so another utility reuses the same coalitions
    assert run(capsys, *sweep("ablate", model_dir, task_file, out, "--utility", "acc"))[0] == 0
    assert games[2].n_forward == 0
    assert cached_rows(out / "utilities.sqlite") == N + 1


# --- shapley -------------------------------------------------------------------------------------
def test_shapley_proximity(capsys, model_dir, task_file, tmp_path):
    out = tmp_path / "prox"
    rc, _, err = run(
        capsys,
        *sweep(
            "shapley",
            model_dir,
            task_file,
            out,
            "--method",
            "proximity",
            "--window",
            "2",
            "--utility",
            "margin",
        ),
    )
    assert rc == 0, err
    assert check_json_files(out) == ["shapley.json"]
    for name in ("shapley.json", "shapley.csv", "shapley.png"):
        assert (out / name).is_file(), name
    data = strict_json(out / "shapley.json")
    # documented cost: sum_{k=1..L} (n-k+1) + 1 = 6 + 5 + 1
    assert data["n_evaluations"] == proximity_cost(N, 2) == 12
    assert data["method"] == "proximity" and data["info"]["window"] == 2
    assert data["players"] == ["attn0", "mlp0", "attn1", "mlp1", "attn2", "mlp2"]
    expected = shapley(direct_game(model_dir, task_file, "margin"), method="proximity", window=2)
    np.testing.assert_allclose(data["values"], expected.values, atol=1e-12)
    with open(out / "shapley.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == N


def test_shapley_permutation_convergence(capsys, model_dir, task_file, tmp_path):
    out = tmp_path / "perm"
    rc, _, err = run(
        capsys,
        *sweep(
            "shapley",
            model_dir,
            task_file,
            out,
            "--method",
            "permutation",
            "--budget",
            "20",
            "--budgets",
            "12,20",
        ),
    )
    assert rc == 0, err
    assert check_json_files(out) == ["convergence.json", "shapley.json"]
    for name in ("convergence.png", "convergence.json", "shapley.json", "shapley.png"):
        assert (out / name).is_file(), name
    data = strict_json(out / "shapley.json")
    assert data["method"] == "permutation" and data["n_evaluations"] <= 20
    assert all(np.isfinite(data["values"]))
    records = strict_json(out / "convergence.json")["records"]
    assert [r["budget"] for r in records] == [12, 20]
    assert all(r["n_evaluations"] <= r["budget"] for r in records)


def test_shapley_budget_below_minimum_is_a_clean_error(capsys, model_dir, task_file, tmp_path):
    # one antithetic permutation pair of 6 players needs 2n = 12 coalitions
    rc, _, err = run(
        capsys,
        *sweep(
            "shapley",
            model_dir,
            task_file,
            tmp_path / "o",
            "--method",
            "permutation",
            "--budgets",
            "10,20",
        ),
    )
    assert rc == 2
    assert "budget=10 is too small" in err and "12" in err


def test_shapley_boolean_option(capsys, model_dir, task_file, tmp_path):
    out = tmp_path / "trunc"
    rc, _, err = run(
        capsys,
        *sweep(
            "shapley",
            model_dir,
            task_file,
            out,
            "--method",
            "truncated",
            "--budget",
            "40",
            "--option",
            "antithetic=false",
            "--option",
            "tolerance=0",
        ),
    )
    assert rc == 0, err
    info = strict_json(out / "shapley.json")["info"]
    assert info["antithetic"] is False and info["tolerance"] == 0


# --- report --------------------------------------------------------------------------------------
def test_report(capsys, model_dir, task_file, tmp_path):
    out = tmp_path / "report"
    rc, stdout, err = run(capsys, *sweep("report", model_dir, task_file, out))
    assert rc == 0, err
    assert check_json_files(out) == ["ablation.json", "shapley.json"]
    for name in ("report.md", "ablation.png", "shapley.png", "ablation.json", "shapley.json"):
        assert (out / name).is_file(), name
    md = (out / "report.md").read_text()
    assert md.startswith("# layerfast report: tiny-llama on tiny6")
    assert "![ablation](ablation.png)" in md and "![shapley](shapley.png)" in md
    assert f"{proximity_cost(N, 3)} coalitions" in md
    assert "requests up to 128 tokens" in md and " left-truncated" in md and "nan" not in md.lower()
    meta = strict_json(out / "ablation.json")
    assert meta["truncation"]["n_truncated"] == 0 and meta["truncation"]["max_length"] > 0
    for player in ("attn0", "mlp2"):
        assert player in md
    assert "top Shapley players" in stdout


# --- the console entry point ---------------------------------------------------------------------
def test_module_entry_point_subprocess(model_dir, task_file, tmp_path):
    """Also with progress bars on and stderr redirected to a file (as under nohup or CI)."""
    out = tmp_path / "sub"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    argv = [a for a in sweep("ablate", model_dir, task_file, out) if a != "--no-progress"]
    with open(tmp_path / "stderr.txt", "w") as stderr:
        proc = subprocess.run(
            [sys.executable, "-m", "layerfast.cli", *map(str, argv)],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env=env,
            timeout=300,
        )
    err = (tmp_path / "stderr.txt").read_text()
    assert proc.returncode == 0, err
    assert (out / "ablation.json").is_file() and (out / "ablation.png").is_file()
    assert "full model" in proc.stdout
    assert bar_redraws(err) <= 12, err


# Game's bar sums k / n_batches per batch: its last redraw can be at 7.0000000000000004 / 7
@pytest.mark.filterwarnings("ignore:clamping frac to range:tqdm.TqdmWarning")
def test_progress_bars_stay_sparse_when_stderr_is_not_a_terminal(
    capsys, model_dir, task_file, tmp_path, monkeypatch
):
    """A long sweep, simulated by a clock that jumps a minute at each reading: one bar, drawn
    at most about a dozen times when stderr is not a terminal (here: pytest's capture)."""
    clock = itertools.count(0.0, 60.0)
    monkeypatch.setattr(tqdm.std, "time", lambda: next(clock))
    argv = [
        a
        for a in sweep(
            "ablate", model_dir, task_file, tmp_path / "log", "--batch-tokens", "16"
        )  # many batches: many updates
        if a != "--no-progress"
    ]
    rc, _, err = run(capsys, *argv)
    assert rc == 0, err
    assert 1 <= bar_redraws(err) <= 12, err

    # the same sweep on a terminal keeps the live bar: a redraw at every update
    monkeypatch.setattr(layerfast.progress, "is_terminal", lambda stream=None: True)
    argv = [
        a
        for a in sweep(
            "ablate", model_dir, task_file, tmp_path / "tty", "--batch-tokens", "16"
        )  # many batches: many updates
        if a != "--no-progress"
    ]
    rc, _, err = run(capsys, *argv)
    assert rc == 0, err
    assert bar_redraws(err) > 12, err


# --- bad input -----------------------------------------------------------------------------------
def test_malformed_task_line(capsys, model_dir, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        '{"context": "a", "choices": ["x", "y"], "gold": 0}\n'
        '{"context": "b", "choices": ["x", "y"\n'
    )
    rc, _, err = run(capsys, *sweep("ablate", model_dir, bad, tmp_path / "o"))
    assert rc == 2
    assert f"{bad}:2" in err and "not valid JSON" in err
    assert not (tmp_path / "o").exists()


def test_unknown_model(capsys, task_file, tmp_path):
    rc, _, err = run(
        capsys,
        "ablate",
        "--model",
        "no-such-model",
        "--task",
        task_file,
        "--out",
        tmp_path / "o",
        "--no-progress",
    )
    assert rc == 2
    assert "'no-such-model' is neither a local model folder nor a packaged model" in err
    assert "smollm2-135m" in err  # names the packaged models


@pytest.mark.parametrize(
    "task, extra, message",
    [
        ("capitls", [], "unknown task 'capitls'"),
        ("missing.jsonl", [], "does not exist"),
        (None, ["--limit", "0"], "--limit must be an integer >= 1, got 0"),
    ],
)
def test_bad_task_or_limit(capsys, model_dir, task_file, tmp_path, task, extra, message):
    task = task_file if task is None else tmp_path / task if "." in task else task
    rc, _, err = run(capsys, *sweep("ablate", model_dir, task, tmp_path / "o", *extra))
    assert rc == 2 and message in err
    assert not (tmp_path / "o").exists()


def test_misspelled_estimator_option(capsys, model_dir, task_file, tmp_path):
    out = tmp_path / "o"
    rc, _, err = run(
        capsys,
        *sweep(
            "shapley", model_dir, task_file, out, "--method", "proximity", "--option", "windw=3"
        ),
    )
    assert rc == 2
    assert "'windw'" in err and "did you mean 'window'" in err
    assert "valid options: ['window']" in err
    assert not out.exists(), "a bad option must fail before the model loads and OUT is created"


def test_option_without_equals(capsys, model_dir, task_file, tmp_path):
    rc, _, err = run(
        capsys, *sweep("shapley", model_dir, task_file, tmp_path / "o", "--option", "window")
    )
    assert rc == 2 and "KEY=VALUE" in err


def test_bad_budgets_is_a_clean_error(capsys, model_dir, task_file, tmp_path):
    rc, _, err = run(
        capsys,
        *sweep(
            "shapley",
            model_dir,
            task_file,
            tmp_path / "o",
            "--method",
            "permutation",
            "--budgets",
            "12,x",
        ),
    )
    assert rc == 2 and "--budgets" in err and "'12,x'" in err
    assert not (tmp_path / "o").exists()


def test_a_bug_keeps_its_traceback(capsys, monkeypatch):
    def broken():
        raise RuntimeError("a bug, not a user error")

    monkeypatch.setattr(lf.tasks, "available", broken)
    with pytest.raises(RuntimeError, match="a bug"):
        cli.main(["tasks"])


def test_choices_come_from_the_registries():
    from layerfast.activations.dispatch import BACKENDS
    from layerfast.estimators import ESTIMATORS
    from layerfast.tasks.scoring import UTILITIES

    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "verb").choices
    options = {(verb, a.dest): a for verb, p in sub.items() for a in p._actions}
    assert list(options["shapley", "method"].choices) == list(ESTIMATORS)
    for verb in ("ablate", "shapley", "report", "prune", "eavss"):
        assert list(options[verb, "utility"].choices) == list(UTILITIES)
    for verb in ("avss", "prune", "eavss"):  # read when parsed: the registry imports torch
        for name in BACKENDS:
            assert parser.parse_args([verb, "--backend", name]).backend == name
        with pytest.raises(cli.FlagError, match="--backend must be one of auto, triton"):
            parser.parse_args([verb, "--backend", "cuda"])


def test_importing_the_cli_and_its_help_stay_light():
    """``layerfast --help`` and every ``layerfast VERB --help`` import neither torch,
    transformers nor matplotlib."""
    code = (
        "import sys, layerfast.cli as c; p = c.build_parser(); p.format_help(); "
        "[v.format_help() for v in p.verb_parsers.values()]; "
        "heavy = [m for m in ('torch', 'transformers', 'matplotlib') if m in sys.modules]; "
        "print(heavy); sys.exit(bool(heavy))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_flag_is_declared_once():
    """One ``add_argument`` call in the whole package (``flags.add``), one entry per option
    string in the flag table, and every option of every verb comes from that table."""
    from layerfast.cli.flag_table import FLAGS

    calls, keys = [], []
    for path in sorted((ROOT / "layerfast" / "cli").glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "add_argument":
                calls.append(f"{path.name}:{node.lineno}")
            if isinstance(node, ast.AnnAssign) and getattr(node.target, "id", "") == "FLAGS":
                keys += [k.value for k in node.value.keys]
    assert calls == [calls[0]] and calls[0].startswith("flags.py:"), calls
    assert sorted(keys) == sorted(set(keys)), [k for k in keys if keys.count(k) > 1]
    assert set(keys) == set(FLAGS)
    sub = next(a for a in cli.build_parser()._actions if a.dest == "verb").choices
    used = set()
    for p in sub.values():
        for a in p._actions:
            if a.dest != "help":
                strings = a.option_strings or [a.dest]
                assert len(strings) == 1 and strings[0] in FLAGS, strings
                used.add(strings[0])
    assert used == set(FLAGS), set(FLAGS) - used  # no declaration left unused


def test_option_values_are_typed():
    pairs = ["a=3", "b=0.5", "c=true", "d=False", "e=none", "f=x=y"]
    assert dict(key_value(p) for p in pairs) == {
        "a": 3,
        "b": 0.5,
        "c": True,
        "d": False,
        "e": None,
        "f": "x=y",
    }


def test_tasks_lists_builtins(capsys):
    rc, stdout, _ = run(capsys, "tasks")
    assert rc == 0
    names = stdout.split()
    assert "capitals" in names and "analogies" in names


def test_avss_and_prune(capsys, model_dir, task_file, tmp_path):
    texts = tmp_path / "calib.txt"
    texts.write_text(
        "the cat sat on the mat\n\nQ: What is the capital of France?\nA: Paris\n"
        "Athens is to Greece as Baghdad is to Iraq\n"
    )
    out = tmp_path / "avss"
    code, stdout, _ = run(
        capsys,
        "avss",
        "--model",
        str(model_dir),
        "--texts",
        str(texts),
        "--eps",
        "0.05",
        "--out",
        str(out),
        "--no-progress",
    )
    assert code == 0, stdout
    data = strict_json(out / "avss.json")
    assert len(data["avss"]) == 3 and data["padding"] == "excluded" and data["n_texts"] == 4
    assert data["dtype"] == "bfloat16"  # the fp32 model's statistics count in bf16 by default
    assert (out / "avss.png").stat().st_size > 0
    assert len((out / "avss.csv").read_text().splitlines()) == 4
    assert check_json_files(out) == ["avss.json"]

    # the default eps, counted in the fp32 model's own dtype: AS = 0 leaves AVSS undefined (NaN),
    # written as null, with a note on stdout and a one-line warning naming the blocks
    out = tmp_path / "avss-nan"
    code, stdout, err = run(
        capsys,
        "avss",
        "--model",
        str(model_dir),
        "--texts",
        str(texts),
        "--out",
        str(out),
        "--no-progress",
        "--backend",
        "torch",
        "--stats-dtype",
        "model",
    )
    assert code == 0, stdout
    data = strict_json(out / "avss.json")
    assert data["dtype"] == "float32"
    assert data["as_zero"] and all(data["avss"][b] is None for b in data["as_zero"])
    assert "AVSS is undefined there" in stdout
    assert "layerfast avss: warning: AS = 0 in block" in err and "Traceback" not in err

    out = tmp_path / "prune"
    saved = tmp_path / "pruned"
    code, stdout, _ = run(
        capsys,
        "prune",
        "--model",
        str(model_dir),
        "--task",
        str(task_file),
        "--by",
        "bi",
        "--texts",
        str(texts),
        "--fraction",
        "0.34",
        "--out",
        str(out),
        "--save",
        str(saved),
        "--no-progress",
    )
    assert code == 0, stdout
    assert check_json_files(out) == ["prune.json"]
    result = strict_json(out / "prune.json")
    assert len(result["removed"]) == 1
    removed = result["removed"][0]
    keep = np.ones(6, bool)
    keep[2 * removed : 2 * removed + 2] = False
    game = direct_game(model_dir, task_file)
    assert result["after"] == pytest.approx(float(game(keep[None])[0]), abs=1e-12)
    reloaded = lf.load(saved)
    assert reloaded.n_blocks == 2


def test_eavss_and_controlled_finetune(capsys, model_dir, tmp_path):
    task = tmp_path / "tiny12.jsonl"
    with open(task, "w", encoding="utf-8") as f:
        for context, choices, gold in TINY_ITEMS:
            f.write(json.dumps({"context": context, "choices": choices, "gold": gold}) + "\n")
    out = tmp_path / "eavss"
    rc, stdout, err = run(
        capsys,
        *sweep(
            "eavss",
            model_dir,
            task,
            out,
            "--n-boot",
            "20",
            "--stats-dtype",
            "model",
            "--eps",
            "0.05",
            "--k",
            "1",
        ),
    )
    assert rc == 0, err
    assert check_json_files(out) == ["eavss.json"]
    data = strict_json(out / "eavss.json")
    assert data["n_correct"] + data["n_wrong"] == len(TINY_ITEMS)
    assert len(data["scopes"]["answer"]["eavss"]) == N // 2
    assert (out / "eavss.png").stat().st_size > 0 and "top 1 blocks" in stdout
    ft = tmp_path / "ft"
    rc, stdout, err = run(
        capsys,
        *sweep(
            "eavss",
            model_dir,
            task,
            ft,
            "--finetune",
            "--steps",
            "2",
            "--batch-size",
            "2",
            "--k",
            "1",
            "--n-random",
            "1",
            "--n-boot",
            "20",
            "--stats-dtype",
            "model",
            "--save",
            tmp_path / "tuned",
        ),
    )
    assert rc == 0, err
    assert check_json_files(ft) == ["eavss.json", "finetune.json"]
    rows = strict_json(ft / "finetune.json")["rows"]
    assert [r["condition"] for r in rows] == [
        "before",
        "eavss-top",
        "eavss-bottom",
        "random-0",
        "all",
    ]
    assert "| eavss-top |" in (ft / "finetune.md").read_text()
    tuned = lf.load(tmp_path / "tuned")
    assert tuned.n_blocks == N // 2
    rc, _, err = run(
        capsys, *sweep("eavss", model_dir, task, tmp_path / "bad", "--utility", "margin")
    )
    assert rc == 2 and "utility" in err


# --- help and flags (issue 13, item 8) -----------------------------------------------------------
def test_top_level_help_lists_every_verb():
    text = cli.build_parser().format_help()
    sub = next(a for a in cli.build_parser()._actions if a.dest == "verb")
    helps = {c.dest: c.help for c in sub._choices_actions}
    assert set(helps) == set(cli.VERBS)
    for verb in cli.VERBS:
        assert re.search(rf"^\s+{verb}\s+\S", text, re.M), f"{verb} is not listed in --help"
        assert helps[verb], f"{verb} has no help line"


# a dest whose meaning differs between verbs on purpose, and why
SAME_NAME_OTHER_MEANING = {
    "save": "prune saves the pruned model, eavss --finetune the fine-tuned one",
    "max_length": "tokens per input: per request in the sweep verbs, per document in avss",
    "tasks": "harness task names in eval, layerfast task specs (--task's values) in report",
}


def test_a_flag_means_the_same_in_every_verb():
    """Type, default, choices, action and help of a flag shared by verbs are equal (fetch, which
    only prepares files, is left out)."""
    sub = next(a for a in cli.build_parser()._actions if a.dest == "verb").choices
    seen: dict[str, dict[str, list[str]]] = {}
    for verb, p in sub.items():
        if verb == "fetch":
            continue
        for a in p._actions:
            if a.dest == "help" or a.dest in SAME_NAME_OTHER_MEANING:
                continue
            choices = list(a.choices) if a.choices is not None else None
            sig = repr((a.option_strings, type(a), a.type, a.default, choices, a.help))
            seen.setdefault(a.dest, {}).setdefault(sig, []).append(verb)
    differ = {dest: list(sigs.values()) for dest, sigs in seen.items() if len(sigs) > 1}
    assert not differ, differ
    # the flags every model-loading verb shares
    for dest in ("model", "dtype", "device", "out", "no_progress", "threads", "tokenizer"):
        assert dest in seen, dest
        assert sorted(next(iter(seen[dest].values()))) == sorted(set(sub) - {"fetch", "tasks"})
    for dest in ("stats_dtype", "eps", "relative", "backend"):
        assert sorted(next(iter(seen[dest].values()))) == ["avss", "eavss", "prune"], dest


def test_k_is_checked_against_the_blocks_before_the_statistics_pass(
    capsys, model_dir, task_file, tmp_path, monkeypatch
):
    import layerfast.hallucination.eavss as eavss_module

    def no_pass(*args, **kwargs):
        raise AssertionError("the EAVSS pass ran although --k was already known to be too big")

    monkeypatch.setattr(eavss_module, "eavss", no_pass)
    games = record_games(monkeypatch)
    rc, _, err = run(capsys, *sweep("eavss", model_dir, task_file, tmp_path / "o", "--k", "4"))
    assert rc == 2 and "--k 4: the model has only 3 blocks" in err
    assert not games, "no Game (and no evaluation) before the cheap checks"


def test_tokenizer_folder_for_a_model_folder_without_one(capsys, model_dir, task_file, tmp_path):
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("config.json", "model.safetensors"):
        (bare / name).write_bytes((model_dir / name).read_bytes())
    out = tmp_path / "o"
    rc, _, err = run(capsys, *sweep("ablate", bare, task_file, out, "--tokenizer", model_dir))
    assert rc == 0, err
    assert strict_json(out / "ablation.json")["full"] == pytest.approx(
        direct_game(model_dir, task_file)(np.ones((1, N), bool))[0], abs=1e-12
    )
    rc, _, err = run(capsys, *sweep("ablate", bare, task_file, tmp_path / "o2"))
    assert rc == 2 and "has no tokenizer" in err and "--tokenizer DIR" in err


# --- threads (issue 13, item 9) ------------------------------------------------------------------
def test_threads_flag_reaches_torch_and_the_metadata(
    capsys, model_dir, task_file, tmp_path, monkeypatch
):
    seen = []
    original = lf.Game.__init__

    def init(self, *args, **kwargs):
        seen.append(torch.get_num_threads())  # what the sweep runs with
        original(self, *args, **kwargs)

    monkeypatch.setattr(lf.Game, "__init__", init)
    before = torch.get_num_threads()
    out = tmp_path / "two"
    rc, _, err = run(
        capsys, *sweep("ablate", model_dir, task_file, out, "--threads", "2", "--limit", "2")
    )
    assert rc == 0, err
    assert seen == [2]
    assert strict_json(out / "ablation.json")["threads"] == 2
    assert torch.get_num_threads() == before, "the caller's thread count is restored"

    # auto: the tiny model (hidden size 32) is far below the threshold, so one thread, whatever
    # the count before; report.md says so
    torch.set_num_threads(2)
    try:
        out = tmp_path / "auto"
        rc, _, err = run(capsys, *sweep("report", model_dir, task_file, out))
        assert rc == 0, err
        assert seen[-1] == 1 and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert strict_json(out / "shapley.json")["threads"] == 1
    assert "on 1 CPU threads" in (out / "report.md").read_text()


def test_readme_flag_table_matches_the_parser():
    """README's "Flags by verb" table lists every flag of every verb, with exactly the verbs
    that take it."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| (`--.*?) \| ([a-z, ]+) \|$", readme, re.M)
    assert rows, "README has no flags table"
    documented: dict[str, set[str]] = {}
    for flags, verbs in rows:
        for flag in re.findall(r"`(--[a-z-]+)`", flags):
            assert flag not in documented, f"{flag} is listed twice"
            documented[flag] = {v.strip() for v in verbs.split(",")}
    sub = next(a for a in cli.build_parser()._actions if a.dest == "verb").choices
    actual: dict[str, set[str]] = {}
    for verb, p in sub.items():
        for a in p._actions:
            if a.option_strings and a.dest != "help":
                actual.setdefault(a.option_strings[0], set()).add(verb)
    assert documented == actual


def test_tokenizer_folder_code_never_runs(capsys, model_dir, task_file, tmp_path):
    """A --tokenizer folder whose tokenizer_config.json names its own code (auto_map): the code
    is not run (it would write a marker file)."""
    folder = tmp_path / "tok"
    folder.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (folder / name).write_bytes((model_dir / name).read_bytes())
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config["auto_map"] = {"AutoTokenizer": ["tok.MyTok", None]}
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    marker = tmp_path / "MARKER"
    (folder / "tok.py").write_text(
        f"open({str(marker)!r}, 'w').write('ran')\n"
        "from transformers import PreTrainedTokenizerFast\n"
        "class MyTok(PreTrainedTokenizerFast):\n    pass\n"
    )
    run(capsys, *sweep("ablate", model_dir, task_file, tmp_path / "o", "--tokenizer", folder))
    assert not marker.exists(), "the tokenizer folder's own code ran"


# --- model hub ids: --revision -------------------------------------------------------------------
def test_revision_reaches_load_and_fetch(capsys, monkeypatch, task_file, tmp_path):
    """``--revision`` goes to ``lf.load(..., revision=)`` in the verbs that load a model, and to
    ``fetch_model(..., revision=)`` in fetch; without it neither is given one."""
    from layerfast.cli import data
    from layerfast.errors import UsageError
    from layerfast.models import loading

    calls = []

    def load(model, **kwargs):
        calls.append((model, kwargs.get("revision")))
        raise UsageError("stop here")

    monkeypatch.setattr(lf, "load", load, raising=False)
    monkeypatch.setattr(lf.models, "load", load)
    task = ["--task", task_file]
    for verb, extra in (("ablate", task), ("avss", []), ("eavss", task)):
        for rev in (["--revision", "v1.0"], []):
            argv = [verb, "--model", "org/name", *rev, "--out", tmp_path / "o", *extra]
            rc, _, err = run(capsys, *argv)
            assert rc == 2 and "stop here" in err, err
    assert calls == [("org/name", r) for _ in range(3) for r in ("v1.0", None)]

    fetched = []
    monkeypatch.setattr(
        loading, "fetch_model", lambda spec, trust=False, **kw: fetched.append((spec, kw))
    )
    monkeypatch.setattr(data.tasks, "load", lambda name: [None])
    fetch = ["fetch", "--model", "org/name", "--task", "x"]
    assert run(capsys, *fetch, "--revision", "abc123")[0] == 0
    assert run(capsys, *fetch)[0] == 0
    assert fetched == [("org/name", {"revision": "abc123"}), ("org/name", {})]


def test_model_help_names_hub_ids():
    sub = next(a for a in cli.build_parser()._actions if a.dest == "verb").choices
    (model,) = [a for a in sub["ablate"]._actions if a.dest == "model"]
    assert "model hub id (org/name; the HF cache first, HF_HUB_OFFLINE=1 respected)" in model.help
