"""``layerfast prune --by search`` on the tiny random Llama saved as a local HF folder: the files it
writes, its values against a direct ``lf.Game``, the saved pruned model against the masked
original, ``--unit block``, ``--beam``, a rerun served from the cache, ``--utility kl`` on a
text task, and the flag combinations it refuses (exit 2, one line, no traceback)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import layerfast
import layerfast as lf
import layerfast.models
from layerfast import cli
from tests.cli.test_cli import direct_game, run, strict_json, sweep
from tests.conftest import TINY_ITEMS

N = 6  # players of the tiny 3-block Llama
IDS = torch.tensor([[5, 17, 42, 7, 99, 3, 61, 8, 23]])


def write_items(path, rows, name):
    with open(path, "w", encoding="utf-8") as f:
        for i, (context, choices, gold) in enumerate(rows):
            row = {"context": context, "choices": choices, "gold": gold, "id": f"{name}{i}"}
            f.write(json.dumps(row) + "\n")
    return path


@pytest.fixture(scope="module")
def task_file(tmp_path_factory):
    return write_items(tmp_path_factory.mktemp("task") / "tiny4.jsonl", TINY_ITEMS[:4], "t")


@pytest.fixture(scope="module")
def held_file(tmp_path_factory):
    return write_items(tmp_path_factory.mktemp("held") / "held3.jsonl", TINY_ITEMS[6:9], "h")


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("text") / "docs.txt"
    path.write_text(
        "the cat sat on the mat\nQ: What is the capital of France?\nthe dog sat on the log\n",
        encoding="utf-8",
    )
    return path


def search(model_dir, task, out, *extra):
    return sweep("prune", model_dir, task, out, "--by", "search", *extra)


def masked_logits(model, keep):
    with torch.no_grad():
        return model(IDS, keep=keep)


def saved_logits(folder):
    with torch.no_grad():
        return lf.load(folder)(IDS)


def step_lines(stdout: str) -> list[str]:
    return [line for line in stdout.splitlines() if line.startswith("step ")]


# --- sublayers, held-out task, --save ------------------------------------------------------------
def test_search_sublayers_writes_values_held_out_and_the_pruned_model(
    capsys, model_dir, task_file, held_file, tmp_path
):
    out, saved = tmp_path / "out", tmp_path / "pruned"
    argv = search(model_dir, task_file, out, "--fraction", "0.34", "--utility", "logprob")
    rc, stdout, err = run(capsys, *argv, "--save", saved, "--eval-tasks", held_file)
    assert rc == 0, err
    assert "Traceback" not in err
    for name in ("prune.json", "prune.csv", "prune.png", "prune.svg"):
        assert (out / name).stat().st_size > 0, name
    data = strict_json(out / "prune.json")
    k = round(0.34 * N)
    assert k == 2
    assert data["by"] == "search" and data["method"] == "greedy" and data["utility"] == "logprob"
    assert len(data["order"]) == k and len(set(data["order"])) == k
    assert set(data["order"]) <= set(data["names"]) and len(data["names"]) == N
    masks = np.array(data["masks"], dtype=bool)
    assert masks.shape == (k + 1, N) and masks[0].all()
    assert [int((~m).sum()) for m in masks] == list(range(k + 1))

    game = direct_game(model_dir, task_file, utility="logprob")
    want = game(masks)
    np.testing.assert_allclose(data["search"]["values"], want, rtol=0, atol=1e-12)
    held = direct_game(model_dir, held_file)  # a held-out task scores its default utility
    assert list(data["held_out"]) == [str(held_file)]
    held_out = data["held_out"][str(held_file)]
    assert held_out["utility"] == "acc_norm"
    np.testing.assert_allclose(held_out["values"], held(masks), rtol=0, atol=1e-12)

    rows = (out / "prune.csv").read_text().splitlines()
    assert len(rows) == 1 + k + 1  # header, the full model, one per step

    # the sublayers are zeroed: the folder keeps every block and equals the masked original
    model = lf.load(model_dir)
    reloaded = lf.load(saved)
    assert reloaded.n_blocks == 3
    want_logits = masked_logits(model, masks[-1])
    assert (want_logits - masked_logits(model, None)).abs().max().item() > 1e-4
    torch.testing.assert_close(saved_logits(saved), want_logits, atol=1e-5, rtol=0)

    lines = step_lines(stdout)
    assert len(lines) == k
    for i, (line, name) in enumerate(zip(lines, data["order"]), 1):
        assert line.startswith(f"step {i}: removed {name} -> logprob "), line
    assert f"removed (greedy, {k} sublayers): {', '.join(data['order'])}" in stdout
    assert f"{data['evaluations']} coalitions evaluated" in stdout
    assert data["evaluations"] == 1 + N + (N - 1)  # full model, then every remaining candidate


# --- whole blocks --------------------------------------------------------------------------------
def test_search_blocks_saves_a_model_with_one_block_fewer(capsys, model_dir, task_file, tmp_path):
    out, saved = tmp_path / "out", tmp_path / "pruned"
    argv = search(model_dir, task_file, out, "--unit", "block", "--fraction", "0.34")
    rc, stdout, err = run(capsys, *argv, "--utility", "logprob", "--save", saved)
    assert rc == 0, err
    data = strict_json(out / "prune.json")
    assert data["unit"] == "block" and data["names"] == ["block0", "block1", "block2"]
    assert len(data["order"]) == 1 and data["order"][0] in data["names"]
    masks = np.array(data["masks"], dtype=bool)
    assert masks.shape == (2, 3)
    game = lf.Game(
        lf.load(model_dir), lf.tasks.load(task_file), utility="logprob", unit="block",
        progress=False,
    )  # fmt: skip
    np.testing.assert_allclose(data["search"]["values"], game(masks), rtol=0, atol=1e-12)
    assert len(step_lines(stdout)) == 1 and "coalitions evaluated" in stdout

    removed = int(np.flatnonzero(~masks[-1])[0])
    assert data["order"] == [f"block{removed}"]
    model = lf.load(model_dir)
    assert lf.load(saved).n_blocks == model.n_blocks - 1
    torch.testing.assert_close(
        saved_logits(saved), masked_logits(model, model.block_mask([removed])), atol=1e-5, rtol=0
    )


# --- beam ----------------------------------------------------------------------------------------
def test_search_beam(capsys, model_dir, task_file, tmp_path):
    out = tmp_path / "out"
    argv = search(model_dir, task_file, out, "--beam", "2", "--fraction", "0.34")
    rc, stdout, err = run(capsys, *argv, "--utility", "logprob")
    assert rc == 0, err
    data = strict_json(out / "prune.json")
    assert data["method"] == "beam" and data["beam_width"] == 2
    assert len(data["order"]) == 2 and len(step_lines(stdout)) == 2
    assert all(len(step["beam"]) == 2 for step in data["steps"])
    assert "removed (beam, 2 sublayers)" in stdout
    game = direct_game(model_dir, task_file, utility="logprob")
    masks = np.array(data["masks"], dtype=bool)
    np.testing.assert_allclose(data["search"]["values"], game(masks), rtol=0, atol=1e-12)


# --- a rerun with the same OUT is served by OUT/utilities.sqlite ---------------------------------
def test_search_rerun_evaluates_nothing_new(capsys, model_dir, task_file, tmp_path):
    out = tmp_path / "out"
    argv = search(model_dir, task_file, out, "--fraction", "0.34", "--utility", "logprob")
    rc, _, err = run(capsys, *argv)
    assert rc == 0, err
    first = strict_json(out / "prune.json")
    assert (out / "utilities.sqlite").stat().st_size > 0
    assert first["compute"] > 0

    rc, stdout, err = run(capsys, *argv)
    assert rc == 0, err
    again = strict_json(out / "prune.json")
    assert again["compute"] == 0
    assert again["order"] == first["order"] and again["masks"] == first["masks"]
    assert again["evaluations"] == first["evaluations"]
    np.testing.assert_array_equal(again["search"]["values"], first["search"]["values"])
    assert len(step_lines(stdout)) == 2


# --- kl on a text task ---------------------------------------------------------------------------
def test_search_kl_on_a_text_task(capsys, model_dir, text_file, tmp_path):
    out = tmp_path / "out"
    argv = search(model_dir, f"text:{text_file}", out, "--fraction", "0.34", "--utility", "kl")
    rc, stdout, err = run(capsys, *argv)
    assert rc == 0, err
    data = strict_json(out / "prune.json")
    assert data["utility"] == "kl" and data["search"]["utility"] == "kl"
    assert len(data["order"]) == 2
    values = data["search"]["values"]
    assert values[0] == pytest.approx(0.0, abs=1e-4)  # the full model: 0 up to fp32 rounding
    assert all(v <= 1e-9 for v in values[1:])  # v = -KL
    assert values[-1] < 0
    assert "-> kl " in step_lines(stdout)[0]


# --- errors --------------------------------------------------------------------------------------
def _no_load(*args, **kwargs):
    raise AssertionError("a model was loaded although the flags were already known to be bad")


ERRORS = [
    ("beam-without-search", ["--beam", "2"], ["--beam", "--by search"], True),
    ("eval-tasks-without-search", ["--eval-tasks", "x"], ["--eval-tasks", "--by search"], True),
    ("unit-with-avss", ["--by", "avss", "--unit", "block"], ["--unit", "--by search"], True),
    ("search-with-rule", ["--by", "search", "--rule", "cumulative"], ["--rule"], True),
    ("beam-1", ["--by", "search", "--beam", "1"], ["--beam", "1", "2"], True),
    (
        "keep-first-leaves-nothing",
        ["--by", "search", "--fraction", "0.9", "--keep-first", "2"],
        ["keep_first"],
        False,
    ),
    (
        "eval-tasks-missing",
        ["--by", "search", "--eval-tasks", "nosuchtask.jsonl"],
        ["--eval-tasks", "nosuchtask.jsonl"],
        True,
    ),
]


@pytest.mark.parametrize(
    "extra, words, before_load", [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS]
)
def test_bad_search_flags_are_one_line_and_exit_2(
    capsys, monkeypatch, model_dir, task_file, tmp_path, extra, words, before_load
):
    out = tmp_path / "out"
    argv = [str(a) for a in sweep("prune", model_dir, task_file, out, *extra)]
    if before_load:  # layerfast.load first: its lazy lookup must see the real one
        monkeypatch.setattr(layerfast, "load", _no_load, raising=False)
        monkeypatch.setattr(layerfast.models, "load", _no_load)
    try:
        rc = cli.main(argv)
    except SystemExit as e:  # argparse's own errors (a value of the wrong type)
        rc = e.code
    _, err = capsys.readouterr()
    assert rc == 2, err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if ": error:" in line]
    assert len(lines) == 1, err
    assert lines[0] == err.rstrip().splitlines()[-1], "the error must be the last line"
    for word in words:
        assert word in lines[0], (word, lines[0])
    if before_load:
        assert not out.exists(), "--out was created although the flags were bad"
