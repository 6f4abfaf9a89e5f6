"""EAVSS on generative tasks: the right/wrong split is the generative game's per-item exact_match,
the statistics run on prompt + generated tokens, one empty group is a clear message (and the CLI
still records the split), the fine-tuning experiment runs (first target against the model's own
wrong answer), and the CLI writes the counts and example generations.

Fast tests use the tiny random Llama, on a task whose targets are made from its own generations
(so both groups are known); the slow ones SmolLM2-135M on ``capitals-gen`` (8 items: the model
answers "The capital of X is ..." instead of the name, so every answer is wrong).
"""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

import layerfast as lf
from layerfast.errors import UsageError
from layerfast.hallucination import generative as gen
from layerfast.hallucination.contrastive import FinetuneConfig
from layerfast.hallucination.eavss import eavss, item_stats
from layerfast.hallucination.experiment import compare, evaluate, split_task
from layerfast.tasks import GenItem, GenTask
from tests.cli.test_cli import run, save_tiny_model, strict_json, sweep
from tests.conftest import TINY_ITEMS

MAX_NEW = 4


def gen_task(targets, name="tiny-gen") -> GenTask:
    items = [
        GenItem(ctx, tuple(t), f"g{i}")
        for i, ((ctx, _, _), t) in enumerate(zip(TINY_ITEMS, targets, strict=True))
    ]
    return GenTask(name, items, until=("\n",), max_new_tokens=MAX_NEW)


def generations(model) -> list[str]:
    """The full model's scored texts on the tiny contexts."""
    game = lf.Game(model, gen_task([("zzz",)] * len(TINY_ITEMS)), progress=False)
    return game.texts(game.full_mask())


def mixed_task(model, wrong=lambda i: i % 3 == 0, name="tiny-gen") -> GenTask:
    """Items ``wrong(i)`` get a target the model never writes; the others its own answer."""
    texts = generations(model)
    targets = [("zzz-never",) if wrong(i) else (t,) for i, t in enumerate(texts)]
    return gen_task(targets, name)


@pytest.fixture(scope="module")
def mixed(tiny_llama):
    return mixed_task(tiny_llama)


def test_generated_requests_are_prompt_plus_generation(tiny_llama, mixed):
    game = lf.Game(tiny_llama, mixed, progress=False)
    full = game.full_mask()
    (tokens,) = game.outputs(full[None])
    got = gen.outcomes(tiny_llama, mixed, "exact_match", game=game, progress=False)
    for p, out, req in zip(game.prompts, tokens, got.requests, strict=True):
        assert len(out) >= 1
        # what the model read: the prompt and every generated token but the last
        assert list(req.input_ids) == list(p.input_ids) + list(out[:-1])
        assert list(req.targets) == list(out)
    assert got.texts == game.texts(full)
    # the statistics cover exactly those positions: the answer scope the positions that produced
    # the generated tokens, the sequence scope every position the model computed
    st = item_stats(tiny_llama, got.requests, eps=0.05, backend="torch", progress=False)
    d = tiny_llama.hf_model.config.hidden_size
    for i, (p, out) in enumerate(zip(game.prompts, tokens, strict=True)):
        assert (st["answer"].entries[i] == len(out) * d).all()
        assert (st["sequence"].entries[i] == (len(p.input_ids) + len(out) - 1) * d).all()


def test_split_is_the_games_exact_match(tiny_llama, mixed):
    res = eavss(tiny_llama, mixed, eps=0.05, n_boot=20, stats_dtype="model", progress=False)
    game = lf.Game(tiny_llama, mixed, utility="exact_match", progress=False)
    direct = game.per_item(game.full_mask())
    np.testing.assert_array_equal(res.correct, direct)
    assert res.correct.tolist() == [0 if i % 3 == 0 else 1 for i in range(len(mixed))]
    assert res.utility == "exact_match" and list(res.predictions) == game.texts(game.full_mask())
    record = res.meta["generative"]
    assert (record["n_right"], record["n_wrong"]) == (8, 4)
    d = res.to_dict()
    assert (d["n_correct"], d["n_wrong"]) == (8, 4)
    examples = record["wrong_examples"]
    assert [e["item"] for e in examples] == [0, 3, 6, 9]
    for e in examples:
        assert e["context"] == mixed.items[e["item"]].context
        assert e["generated"] == res.predictions[e["item"]]
        assert e["targets"] == ["zzz-never"]
    assert [r["right"] for r in res.generations] == res.correct.tolist()
    json.dumps(d)
    for scope in ("answer", "sequence"):
        assert res.scopes[scope]["eavss"].shape == (tiny_llama.n_blocks,)
    # only the first five wrong items are recorded
    many = gen_task([("zzz",)] * 11 + [(generations(tiny_llama)[11],)])
    res = eavss(tiny_llama, many, eps=0.05, n_boot=5, stats_dtype="model", progress=False)
    assert [e["item"] for e in res.meta["generative"]["wrong_examples"]] == [0, 1, 2, 3, 4]


def test_one_empty_group_is_a_clear_message(tiny_llama):
    texts = generations(tiny_llama)
    for targets, which, n_right in (
        ([("zzz",)] * len(texts), "every item is wrong", 0),
        ([(t,) for t in texts], "every item is right", len(texts)),
    ):
        with pytest.raises(gen.OneGroupEmpty, match=which) as info:
            eavss(tiny_llama, gen_task(targets), n_boot=5, stats_dtype="model", progress=False)
        assert isinstance(info.value, UsageError)
        assert f"on {n_right} of {len(texts)} items" in str(info.value)
        assert info.value.record["n_right"] == n_right
        assert len(info.value.rows) == len(texts)


def test_utilities(tiny_llama, mixed):
    with pytest.raises(UsageError, match=r"right/wrong split.*'f1'"):
        eavss(tiny_llama, mixed, utility="f1", progress=False)
    with pytest.raises(UsageError, match="acc_norm"):
        eavss(tiny_llama, mixed, utility="acc_norm", progress=False)
    res = eavss(
        tiny_llama, mixed, utility="exact_match", n_boot=5, stats_dtype="model", progress=False
    )
    assert res.correct.sum() == 8


def test_split_task_keeps_the_generative_settings(mixed):
    parts = split_task(mixed, seed=1)
    ids = [[it.id for it in t.items] for t in parts]
    assert sorted(sum(ids, [])) == sorted(it.id for it in mixed.items)
    for t in parts:
        assert isinstance(t, GenTask) and t.generative
        assert (t.until, t.max_new_tokens) == (mixed.until, mixed.max_new_tokens)
    assert parts[0].notes["split"] == "train"


def test_contrastive_task_and_evaluate(tiny_llama, mixed):
    texts = generations(tiny_llama)
    correct = np.array([0 if i % 3 == 0 else 1 for i in range(len(mixed))])
    task = gen.contrastive_task(mixed, correct, texts)
    for i, it in enumerate(task.items):
        assert it.gold == 0 and it.context == mixed.items[i].context
        assert it.choices[0] == mixed.items[i].targets[0].strip()  # the first target
        said = texts[i].strip()
        if i % 3 == 0 and said:
            assert it.choices == ("zzz-never", said)  # against the model's own wrong answer
        else:
            assert len(it.choices) == 1  # right (or blank): NLL only
    ev = evaluate(tiny_llama, mixed, "exact_match")
    np.testing.assert_array_equal(ev["correct"], correct)
    gold = lf.Game(tiny_llama, gen.gold_task(mixed), utility="logprob", progress=False)
    np.testing.assert_allclose(ev["gold_logprob"], gold.per_item(gold.full_mask()))
    assert np.isfinite(ev["logprob"]) and ev["logprob"] < 0


def test_compare_on_a_generative_task(tiny_llama):
    task = mixed_task(tiny_llama, wrong=lambda i: i % 2 == 0)
    out = compare(
        tiny_llama,
        task,
        k=1,
        config=FinetuneConfig(steps=2, batch_size=2),
        n_random=1,
        stats_dtype="model",
        progress=False,
        log=lambda *a: None,
    )
    assert [r["condition"] for r in out["rows"]] == [
        "before",
        "eavss-top",
        "eavss-bottom",
        "random-0",
        "all",
    ]
    assert out["utility"] == "exact_match" and sum(out["splits"].values()) == len(task)
    assert all(np.isfinite(r["test_logprob_after"]) for r in out["rows"])


# --- the CLI on the tiny model ------------------------------------------------------------------
@pytest.fixture(scope="module")
def cli_model(tmp_path_factory, model_factory, tiny_tokenizer_fixture):
    folder = tmp_path_factory.mktemp("model") / "tiny-llama"
    return save_tiny_model(folder, model_factory, tiny_tokenizer_fixture)


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_cli_records_the_split_and_generations(capsys, cli_model, tmp_path):
    model = lf.load(cli_model)
    task = mixed_task(model, name="cli-gen")
    texts = generations(model)
    path = tmp_path / "cli-gen.jsonl"
    task.to_jsonl(path)
    out = tmp_path / "out"
    rc, stdout, err = run(capsys, *sweep_args(cli_model, path, out))
    assert rc == 0, err
    data = strict_json(out / "eavss.json")
    assert (data["n_correct"], data["n_wrong"]) == (8, 4)
    assert data["utility"] == "exact_match"
    assert data["generative"]["n_right"] == 8
    assert [e["id"] for e in data["generative"]["wrong_examples"]] == ["g0", "g3", "g6", "g9"]
    rows = read_csv(out / "eavss_generations.csv")
    assert [r["right"] for r in rows] == ["0" if i % 3 == 0 else "1" for i in range(12)]
    assert [r["generated"] for r in rows] == texts
    assert "8 right, 4 wrong" in stdout and (out / "eavss.png").stat().st_size > 0

    # every item wrong: the split is still written, the message says why there are no scores
    bad = tmp_path / "all-wrong.jsonl"
    gen_task([("zzz",)] * 12, name="all-wrong").to_jsonl(bad)
    rc, stdout, err = run(capsys, *sweep_args(cli_model, bad, tmp_path / "bad"))
    assert rc == 2 and "Traceback" not in err
    assert "right (exact_match) on 0 of 12 items" in err and "every item is wrong" in err
    data = strict_json(tmp_path / "bad" / "eavss.json")
    assert (data["n_correct"], data["n_wrong"]) == (0, 12) and data["scopes"] is None
    assert len(data["generative"]["wrong_examples"]) == 5
    assert len(read_csv(tmp_path / "bad" / "eavss_generations.csv")) == 12


def test_cli_finetune_on_a_generative_task(capsys, cli_model, tmp_path):
    task = mixed_task(lf.load(cli_model), wrong=lambda i: i % 2 == 0, name="cli-ft")
    path = tmp_path / "cli-ft.jsonl"
    task.to_jsonl(path)
    out = tmp_path / "ft"
    extra = ("--finetune", "--steps", "2", "--batch-size", "2", "--n-random", "1")
    rc, stdout, err = run(capsys, *sweep_args(cli_model, path, out, *extra))
    assert rc == 0, err
    rows = strict_json(out / "finetune.json")["rows"]
    assert [r["condition"] for r in rows][:2] == ["before", "eavss-top"]
    assert "test exact_match" in (out / "finetune.md").read_text()
    data = strict_json(out / "eavss.json")
    assert (
        data["n_correct"] + data["n_wrong"] == strict_json(out / "finetune.json")["splits"]["train"]
    )


def sweep_args(model, task, out, *extra):
    return sweep("eavss", model, task, out, "--n-boot", "10", "--k", "1", "--eps", "0.05", *extra)


# --- slow: SmolLM2-135M on capitals-gen -----------------------------------------------------------
@pytest.fixture(scope="module")
def smollm():
    return lf.load("smollm2-135m")


@pytest.mark.slow
def test_smollm_capitals_split_is_the_games_exact_match(smollm):
    task = lf.tasks.load("capitals-gen", limit=8)
    game = lf.Game(smollm, task, utility="exact_match", progress=False)
    full = game.full_mask()
    direct = game.per_item(full)
    got = gen.outcomes(smollm, task, "exact_match", game=game, progress=False)
    np.testing.assert_array_equal(got.correct, direct)
    assert got.texts == game.texts(full)
    if 0 < direct.sum() < len(direct):
        res = eavss(smollm, task, n_boot=20, game=game, progress=False)
        np.testing.assert_array_equal(res.correct, direct)
    else:  # as documented the model answers in a sentence: every item wrong
        with pytest.raises(gen.OneGroupEmpty) as info:
            eavss(smollm, task, n_boot=20, game=game, progress=False)
        assert info.value.record["n_right"] == int(direct.sum())
        assert [r["right"] for r in info.value.rows] == direct.astype(int).tolist()


@pytest.mark.slow
def test_smollm_capitals_cli(capsys, tmp_path):
    out = tmp_path / "capitals"
    argv = ["eavss", "--task", "capitals-gen", "--limit", "8", "--out", out, "--no-progress"]
    rc, stdout, err = run(capsys, *argv, "--n-boot", "20")
    assert "Traceback" not in err
    data = strict_json(out / "eavss.json")
    n_right, n_wrong = data["n_correct"], data["n_wrong"]
    assert n_right + n_wrong == 8 and data["generative"]["n_wrong"] == n_wrong
    assert len(data["generative"]["wrong_examples"]) == min(5, n_wrong)
    rows = read_csv(out / "eavss_generations.csv")
    assert len(rows) == 8 and sum(r["right"] == "1" for r in rows) == n_right
    assert f"{n_right} right, {n_wrong} wrong" in stdout
    if n_right == 0 or n_wrong == 0:
        assert rc == 2 and f"on {n_right} of 8 items of capitals-gen" in err
    else:
        assert rc == 0, err
        assert len(data["scopes"]["answer"]["eavss"]) == 30


@pytest.mark.slow
def test_smollm_few_shot_capitals_scores_blocks(smollm):
    """Two worked examples in the prompt make the model answer with a name: some right."""
    base = lf.tasks.load("capitals-gen", limit=8)
    shots = (
        "Q: What is the capital of France?\nA: Paris\nQ: What is the capital of Japan?\nA: Tokyo\n"
    )
    items = [GenItem(shots + it.context, it.targets, it.id) for it in base.items]
    task = GenTask("capitals-gen-2shot", items, until=base.until, max_new_tokens=8)
    game = lf.Game(smollm, task, utility="exact_match", progress=False)
    direct = game.per_item(game.full_mask())
    if not 0 < direct.sum() < len(direct):  # measured: 1 of 8 right (Luxembourg)
        pytest.skip(f"{int(direct.sum())} of 8 right here: no contrast to score")
    res = eavss(smollm, task, n_boot=20, game=game, progress=False)
    np.testing.assert_array_equal(res.correct, direct)
    assert res.meta["generative"]["n_right"] == int(direct.sum())
    assert len(res.top(3)) == 3 and np.isfinite(res.scopes["sequence"]["eavss"]).all()
