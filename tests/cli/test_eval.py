"""``layerfast eval``: the harness's own run command with the model "layerfast", on a tiny model
folder and a local 4-choice task, offline.

A successful run prints the harness's table and writes its results JSON (and, passed through
after ``--``, its samples) under ``--out``; its numbers are those of ``simple_evaluate(model=
"layerfast", ...)`` in this process. A mistake is one line and exit code 2: the form of the
``--remove`` names, the options after ``--``, a missing ``--include-path`` before anything loads;
an unknown task before the model loads; a player the model lacks right after it loads.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

pytest.importorskip("lm_eval")

from layerfast import cli  # noqa: E402
from tests.bridges.local import (  # noqa: E402
    evaluate,
    go_offline,
    samples,
    save_tiny_llama,
    write_mc_task,
)

TASK = "lf_cli_mc4"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("eval_cli")
    model = save_tiny_llama(tmp / "model")
    tasks = tmp / "tasks"
    write_mc_task(tasks, TASK)
    return SimpleNamespace(model=model, tasks=tasks)


@pytest.fixture
def offline(monkeypatch):
    go_offline(monkeypatch)


def run(capsys, *argv):
    rc = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def eval_argv(files, out, *extra):
    return [
        "eval",
        "--model",
        files.model,
        "--tasks",
        TASK,
        "--include-path",
        files.tasks,
        "--out",
        out,
        "--no-progress",
        *extra,
    ]


def test_eval_runs_the_harness_and_writes_its_results(capsys, files, offline, tmp_path):
    out = tmp_path / "out"
    argv = eval_argv(files, out, "--remove", "attn1,mlp2", "--limit", "8", "--", "--log_samples")
    rc, stdout, err = run(capsys, *argv)
    assert rc == 0, err
    # the harness's own table, one row per metric
    assert "Tasks" in stdout and f"|{TASK}" in stdout and "|acc_norm|" in stdout
    (results_file,) = out.glob("*/results_*.json")
    assert results_file.parent.name == str(files.model).replace("/", "__")
    results = json.loads(results_file.read_text())
    assert results["config"]["layerfast"]["removed"] == ["attn1", "mlp2"]
    assert results["config"]["limit"] == 8
    assert str(results_file) in stdout  # the closing "wrote ..." line
    (samples_file,) = out.glob(f"*/samples_{TASK}_*.jsonl")  # --log_samples went through
    logged = [json.loads(line) for line in samples_file.read_text().splitlines()]
    assert len(logged) == 8

    # the same numbers as simple_evaluate(model="layerfast") in this process
    direct = evaluate(
        "layerfast",
        files.tasks,
        [TASK],
        model_args=f"pretrained={files.model},remove=attn1,mlp2,progress=false",
        limit=8,
    )
    for metric in ("acc,none", "acc_norm,none"):
        assert results["results"][TASK][metric] == direct["results"][TASK][metric]
    assert [s["acc_norm"] for s in sorted(logged, key=lambda s: s["doc_id"])] == [
        s["acc_norm"] for s in samples(direct, TASK)
    ]


def test_unknown_task_is_one_line_before_the_model_loads(capsys, files, offline, tmp_path):
    import layerfast.bridges.lm_eval_args as lm_module

    def no_load(*args, **kwargs):
        raise AssertionError("the model loaded before the task names were checked")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(lm_module, "load", no_load)
        rc, _, err = run(capsys, *eval_argv(files, tmp_path / "o", "--tasks", "no_such_task"))
    assert rc == 2
    (line,) = err.strip().splitlines()[-1:]
    assert line.startswith("layerfast eval: error: --tasks: Tasks not found: no_such_task")
    assert "lm-eval ls tasks" in line


def test_a_player_the_model_lacks_lists_the_valid_names(capsys, files, offline, tmp_path):
    rc, _, err = run(capsys, *eval_argv(files, tmp_path / "o", "--remove", "attn1,mlp7"))
    assert rc == 2
    assert "'mlp7' is not a player of this model; valid names: attn0..attn2, mlp0..mlp2" in err


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--remove", "atn1"], "--remove: 'atn1' is not a player name"),
        (["--include-path", "/no/such/folder"], "--include-path /no/such/folder does not exist"),
        (["--", "--model_args", "x=1"], "--model_args after --: layerfast eval sets it"),
        (["--", "--output_path=elsewhere"], "--output_path after --: layerfast eval sets it"),
        (["stray"], "unexpected argument 'stray': harness options go after --"),
        (["--num-fewshot", "-1"], "--num-fewshot must be an integer >= 0"),
        (["--limit", "0"], "--limit must be an integer >= 1"),
    ],
)
def test_mistakes_stop_before_anything_loads(capsys, files, tmp_path, monkeypatch, extra, message):
    import layerfast.cli.eval as eval_module

    def no_harness(argv):
        raise AssertionError("the harness ran although a flag was wrong")

    monkeypatch.setattr(eval_module, "_run_harness", no_harness)
    argv = eval_argv(files, tmp_path / "o", *extra)
    if extra[0] == "--include-path":
        argv = [a for a in argv if a not in ("--include-path", files.tasks)] + extra
    rc, _, err = run(capsys, *argv)
    assert rc == 2
    assert err.strip().splitlines()[-1].startswith(f"layerfast eval: error: {message}"), err


def test_the_harness_command_line(files):
    """What the verb hands the harness: its run command, the model's arguments as JSON, the
    device (the harness's own default is cuda:0), and what follows -- unchanged."""
    from layerfast.cli.eval import harness_argv

    args = cli.build_parser().parse_args(
        [str(a) for a in eval_argv(files, Path("res"))]
        + ["--remove", "attn0 mlp2", "--num-fewshot", "2", "--dtype", "fp32", "--max-length", "64"]
        + ["--batch-tokens", "512", "--threads", "1", "--", "--seed", "3", "--log_samples"]
    )
    argv = harness_argv(args)
    assert argv[:3] == ["run", "--model", "layerfast"]
    assert json.loads(argv[argv.index("--model_args") + 1]) == {
        "pretrained": str(files.model),
        "remove": "attn0 mlp2",
        "batch_tokens": 512,
        "threads": 1,
        "progress": False,
        "dtype": "fp32",
        "max_length": 64,
    }
    pairs = dict(zip(argv[3::2], argv[4::2]))
    assert pairs["--tasks"] == TASK
    assert pairs["--output_path"] == "res"
    assert pairs["--num_fewshot"] == "2"
    assert pairs["--include_path"] == str(files.tasks)
    assert pairs["--device"] == "cpu"
    assert "--limit" not in argv
    assert argv[-3:] == ["--seed", "3", "--log_samples"]


def test_revision_goes_to_the_harness_model(monkeypatch):
    """``eval --revision`` reaches ``LayerfastLM(revision=)`` and from there ``lf.load``."""
    import layerfast.bridges.lm_eval_args as args_module
    from layerfast.bridges.lm_eval_model import LayerfastLM
    from layerfast.cli import build_parser
    from layerfast.cli.eval import model_args
    from layerfast.errors import UsageError

    parsed = build_parser().parse_args(
        ["eval", "--model", "org/name", "--revision", "v1", "--tasks", "t"]
    )
    assert model_args(parsed)["revision"] == "v1"
    parsed = build_parser().parse_args(["eval", "--model", "org/name", "--tasks", "t"])
    assert "revision" not in model_args(parsed)

    seen = {}

    def load(spec, **kwargs):
        seen.update(kwargs, spec=spec)
        raise UsageError("stop here")

    monkeypatch.setattr(args_module, "load", load)
    with pytest.raises(UsageError, match="stop here"):
        LayerfastLM(pretrained="org/name", revision="v1")
    assert seen["spec"] == "org/name" and seen["revision"] == "v1"
