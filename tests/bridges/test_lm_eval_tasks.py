"""lm-evaluation-harness tasks as layerfast tasks (``lf.tasks.load("lm_eval:<name>")``), checked
against the real harness: ``lm_eval.simple_evaluate`` with ``HFLM`` on a tiny model folder, fully
offline (tests/helpers/harness.py), for the full model and two coalitions. In the harness run a
coalition is forward hooks that zero the removed sublayers' outputs (the seed paper's way); on
our side the Game skips them.

Three task shapes, each a local YAML that ``include:``s a built-in harness YAML by path and points
it at local JSONL files (what the README tells users to do):

* ``lf_arc``: arc_easy's prompt, 4 choices, ``target_delimiter: " "``, metrics acc, acc_norm,
  acc_bytes and acc_mutual_info (which adds an unconditional request per choice, empty context);
* ``lf_wino``: winogrande's preprocessing (its ``!function``s): two contexts, one continuation;
* ``lf_mmlu_a`` / ``lf_mmlu_b``: MMLU's template, 5-shot from a ``dev`` split with the
  ``first_n`` sampler and a description, in a group ``lf_mmlu`` that aggregates acc weighted by
  size and acc_norm unweighted.

Tolerances: per-document metrics equal exactly (decisions on fp32 log-likelihoods; the data have
no near-ties, checked); log-likelihoods within 1e-4 in fp32 (the harness's full log_softmax vs
our chunked log-sum-exp and packed rows, see tests/evaluation/test_lm_eval_parity.py);
aggregates within 1e-12 (the same float64 sums in the same order).
"""

from __future__ import annotations

import json
import random
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("lm_eval")

import layerfast as lf  # noqa: E402
from layerfast import cli  # noqa: E402
from layerfast.errors import UsageError  # noqa: E402
from layerfast.evaluation.game import Game  # noqa: E402
from tests.helpers.harness import (  # noqa: E402
    builtin_yaml,
    harness_run,
    local_data,
    offline,
    samples_of,
    tiny_llama_folder,
    write_jsonl,
    zeroed,
)

LL_TOL = 1e-4
NEAR_TIE = 1e-3
INIT = 0.3  # weights ~ N(0, 0.3): large enough that removing a sublayer changes decisions
LIMIT = 10  # first documents of each task (lf_mmlu_a has only 8)
COALITIONS = {
    "full": [1, 1, 1, 1, 1, 1],
    "no attn1, mlp2": [1, 1, 0, 1, 1, 0],
    "no mlp0": [1, 0, 1, 1, 1, 1],
}
SHAPES = ("lf_arc", "lf_wino", "lf_mmlu_a")

WORDS = (
    "cat dog mat log fox Paris Lima Quito Mars Venus planet capital river city red lazy quick "
    "brown Athens Greece Iraq Bogota Sucre Caracas Tokyo"
).split()


def _phrase(rng: random.Random, lo: int, hi: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi)))


def arc_docs(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    docs = []
    for i in range(n):
        texts = rng.sample(WORDS, 4)  # one word each: the context, not the length, decides
        docs.append(
            {
                "id": f"arc{seed}-{i}",
                "question": f"Which {rng.choice(WORDS)} is near the {_phrase(rng, 1, 3)}?",
                "choices": {"text": texts, "label": ["A", "B", "C", "D"]},
                "answerKey": "ABCD"[rng.randrange(4)],
            }
        )
    return docs


def wino_docs(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    docs = []
    for _ in range(n):
        a, b = rng.sample(WORDS, 2)
        docs.append(
            {
                "sentence": f"The {a} sat on the {b} because _ was {_phrase(rng, 1, 3)}.",
                "option1": f"the {a}",
                "option2": f"the {b}",
                "answer": rng.choice(["1", "2"]),
            }
        )
    return docs


def mmlu_docs(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    return [
        {
            "question": f"What is the {_phrase(rng, 1, 3)}?",
            "choices": [_phrase(rng, 1, 3) for _ in range(4)],
            "answer": rng.randrange(4),
        }
        for _ in range(n)
    ]


def write_tasks(root) -> SimpleNamespace:
    """The local task folder (YAMLs) and its data; returns their paths."""
    data, tasks, cache = root / "data", root / "tasks", root / "hf_datasets"
    tasks.mkdir(parents=True)
    arc = {
        split: write_jsonl(data / f"arc_{split}.jsonl", arc_docs(n, seed))
        for split, n, seed in (("train", 3, 1), ("validation", 3, 2), ("test", 12, 3))
    }
    (tasks / "lf_arc.yaml").write_text(
        f"include: {json.dumps(builtin_yaml('arc/arc_easy.yaml'))}\n"
        "task: lf_arc\n"
        "tag: []\n" + local_data(arc, cache) + 'target_delimiter: " "\n'
        "metric_list:\n"
        + "".join(
            f"  - metric: {m}\n    aggregation: mean\n    higher_is_better: true\n"
            for m in ("acc", "acc_norm", "acc_bytes", "acc_mutual_info")
        )
    )
    wino = {
        "train": write_jsonl(data / "wino_train.jsonl", wino_docs(6, 4)),
        "validation": write_jsonl(data / "wino_validation.jsonl", wino_docs(10, 5)),
    }
    (tasks / "lf_wino.yaml").write_text(
        f"include: {json.dumps(builtin_yaml('winogrande/default.yaml'))}\n"
        "task: lf_wino\n" + local_data(wino, cache)
    )
    template = builtin_yaml("mmlu/default/_default_template_yaml")
    for name, n_test, seed in (("lf_mmlu_a", 8, 6), ("lf_mmlu_b", 11, 8)):
        files = {
            "dev": write_jsonl(data / f"{name}_dev.jsonl", mmlu_docs(6, seed + 1)),
            "test": write_jsonl(data / f"{name}_test.jsonl", mmlu_docs(n_test, seed)),
        }
        (tasks / f"{name}.yaml").write_text(
            f"include: {json.dumps(template)}\n"
            f"task: {name}\n" + local_data(files, cache) + "num_fewshot: 5\n"
            f'description: "The following are multiple choice questions about {name}.\\n\\n"\n'
            "metric_list:\n"
            "  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n"
            "  - metric: acc_norm\n    aggregation: mean\n    higher_is_better: true\n"
        )
    (tasks / "lf_mmlu.yaml").write_text(
        "group: lf_mmlu\n"
        "task:\n  - lf_mmlu_a\n  - lf_mmlu_b\n"
        "aggregate_metric_list:\n"
        "  - metric: acc\n    weight_by_size: true\n"
        "  - metric: acc_norm\n    weight_by_size: false\n"
    )
    return SimpleNamespace(tasks=tasks, data=data, cache=cache)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The harness's results for every coalition, and our tasks and Games on the same model."""
    tmp = tmp_path_factory.mktemp("harness_tasks")
    with pytest.MonkeyPatch.context() as mp, offline(mp):
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager

        model_dir = tiny_llama_folder(tmp / "model", init=INIT)
        paths = write_tasks(tmp)
        lm = HFLM(pretrained=str(model_dir), device="cpu", dtype="float32", batch_size=8)
        model = lf.load(lm.model, tokenizer=lm.tokenizer)
        manager = TaskManager(include_path=str(paths.tasks), include_defaults=False)
        harness = {}
        for name, mask in COALITIONS.items():
            with zeroed(model, mask):
                harness[name] = harness_run(
                    lm, ["lf_arc", "lf_wino", "lf_mmlu"], manager, limit=LIMIT
                )
        ours = {
            spec: lf.tasks.load(f"lm_eval:{spec}", include_path=paths.tasks, limit=LIMIT)
            for spec in (*SHAPES, "lf_mmlu")
        }
        # the few-shot override: 2 random winogrande examples per prompt (the seeded sampler)
        shot2_harness = harness_run(lm, ["lf_wino"], manager, num_fewshot=2, limit=6)
        shot2 = lf.tasks.load("lm_eval:lf_wino", include_path=paths.tasks, num_fewshot=2, limit=6)
    games = {spec: Game(model, task, progress=False) for spec, task in ours.items()}
    return SimpleNamespace(
        model=model,
        model_dir=model_dir,
        paths=paths,
        harness=harness,
        ours=ours,
        games=games,
        shot2=shot2,
        shot2_harness=shot2_harness,
    )


def _mask(name: str) -> np.ndarray:
    return np.array([COALITIONS[name]], dtype=bool)


def _harness_ll(samples: list[dict]) -> np.ndarray:
    return np.array([ll for s in samples for ll, _greedy in s["filtered_resps"]])


# --- the requests ------------------------------------------------------------------------------
@pytest.mark.parametrize("spec", SHAPES)
def test_requests_are_the_harness_strings(world, spec):
    samples = samples_of(world.harness["full"], spec)
    assert world.ours[spec].arguments == [tuple(a) for s in samples for a in s["arguments"]]
    assert len(world.ours[spec]) == len(samples) == {"lf_mmlu_a": 8}.get(spec, LIMIT)


def test_the_shapes_are_what_they_claim(world):
    arc, wino, mmlu = (world.ours[s] for s in SHAPES)
    # arc: 4 conditional requests on one context, then 4 unconditional ones (acc_mutual_info)
    first = arc.arguments[:8]
    assert len({c for c, _ in first[:4]}) == 1 and all(c == "" for c, _ in first[4:])
    assert all(cont.startswith(" ") for _, cont in first)
    assert arc.chance == 0.25 and "acc_mutual_info" in arc.utilities
    # winogrande: two contexts, one continuation
    (c1, t1), (c2, t2) = wino.arguments[:2]
    assert c1 != c2 and t1 == t2 and wino.chance == 0.5
    assert wino.default_utility == "acc" and wino.utilities == ("acc",)
    # mmlu: description + 5 examples from dev (first_n), the same prefix for every question
    contexts = [c for c, _ in mmlu.arguments]
    assert all(
        c.startswith("The following are multiple choice questions about lf_mmlu_a.")
        for c in contexts
    )
    assert all(c.count("Answer:") == 6 for c in contexts)
    prefixes = {c[: c.rindex("\n\n")] for c in contexts}
    assert len(prefixes) == 1
    assert mmlu.notes["tasks"]["lf_mmlu_a"]["num_fewshot"] == 5
    # requests of one context share a packing group; different contexts do not
    requests = world.games["lf_wino"].requests
    assert requests[0].group != requests[1].group
    requests = world.games["lf_arc"].requests
    assert len({r.group for r in requests[:4]}) == 1 and requests[4].group != requests[0].group


# --- per-document metrics and log-likelihoods ---------------------------------------------------
@pytest.mark.parametrize("coalition", list(COALITIONS))
@pytest.mark.parametrize("spec", SHAPES)
def test_metrics_and_logliks_match_the_harness(world, spec, coalition):
    results = world.harness[coalition]
    samples = samples_of(results, spec)
    game, mask = world.games[spec], _mask(coalition)
    ours = game.loglik(mask)[0]
    theirs = _harness_ll(samples)
    assert ours.shape == theirs.shape
    diff = np.abs(ours - theirs)
    assert diff.max() <= LL_TOL, f"max |diff| {diff.max():.3g} at request {diff.argmax()}"
    margins = []  # acc's decision margin per document (the data must hold no near-tie)
    n_choices = np.concatenate([leaf.n_choices for leaf in game.task.leaves])
    for s, k in zip(samples, n_choices):
        lls = np.sort([ll for ll, _ in s["filtered_resps"]][:k])
        margins.append(lls[-1] - lls[-2])
    assert min(margins) > NEAR_TIE, "test data: a near-tie makes the comparison fragile"
    for metric in game.task.utilities:
        per_doc = game.per_item(mask, metric)
        np.testing.assert_array_equal(per_doc, [s[metric] for s in samples], err_msg=metric)
        value = game.with_utility(metric)(mask)[0]
        assert value == pytest.approx(results["results"][spec][f"{metric},none"], abs=1e-12)


def test_coalitions_change_the_answers(world):
    """The comparison is not vacuous: removing sublayers changes per-document decisions."""
    for spec in SHAPES:
        game = world.games[spec]
        per_doc = {c: game.per_item(_mask(c), "acc") for c in COALITIONS}
        assert any((per_doc[c] != per_doc["full"]).any() for c in COALITIONS if c != "full"), spec


@pytest.mark.parametrize("coalition", list(COALITIONS))
def test_group_aggregation_is_the_harness(world, coalition):
    """acc weighted by size, acc_norm unweighted: both the harness's group numbers; per-item
    terms average to them; the group's log-likelihoods are its subtasks'."""
    results, mask, game = world.harness[coalition], _mask(coalition), world.games["lf_mmlu"]
    assert len(game.task) == 8 + LIMIT
    np.testing.assert_allclose(
        game.loglik(mask)[0],
        np.concatenate([_harness_ll(samples_of(results, t)) for t in ("lf_mmlu_a", "lf_mmlu_b")]),
        rtol=0,
        atol=LL_TOL,
    )
    assert game.task.utilities == ("acc", "acc_norm")
    for metric in ("acc", "acc_norm"):
        value = game.with_utility(metric)(mask)[0]
        assert value == pytest.approx(results["results"]["lf_mmlu"][f"{metric},none"], abs=1e-12)
        assert np.mean(game.per_item(mask, metric)) == pytest.approx(value, abs=1e-12)
    for metric in ("acc", "acc_norm"):
        raw = np.concatenate(
            [[s[metric] for s in samples_of(results, t)] for t in ("lf_mmlu_a", "lf_mmlu_b")]
        )
        # acc: weighted by size, the documents' own values; acc_norm: each subtask counts once
        sizes = (8, LIMIT)
        weights = np.repeat([sum(sizes) / (2 * n) for n in sizes], sizes)
        want = raw if metric == "acc" else raw * weights
        np.testing.assert_allclose(game.per_item(mask, metric), want, rtol=1e-15, atol=0)
    assert game.chance == pytest.approx(0.25)


def test_num_fewshot_and_the_fewshot_seed(world):
    """num_fewshot=2 on winogrande: the default sampler draws 2 training examples per document
    with the harness's default seed; strings, decisions and log-likelihoods as the harness."""
    samples = samples_of(world.shot2_harness, "lf_wino")
    task = world.shot2
    assert task.arguments == [tuple(a) for s in samples for a in s["arguments"]]
    contexts = [c for c, _ in task.arguments]
    assert all(c.count("\n\n") == 2 for c in contexts)
    assert len({c[: c.rindex("\n\n")] for c in contexts[::2]}) > 1, "random examples per doc"
    game = Game(world.model, task, progress=False)
    full = np.ones((1, 6), bool)
    np.testing.assert_allclose(game.loglik(full)[0], _harness_ll(samples), rtol=0, atol=LL_TOL)
    np.testing.assert_array_equal(game.per_item(full), [s["acc"] for s in samples])
    assert task.fingerprint() != world.ours["lf_wino"].fingerprint()


# --- bad input -----------------------------------------------------------------------------------
def test_unknown_task_says_how_to_find_names(world):
    with pytest.raises(UsageError) as e:
        lf.tasks.load("lm_eval:lf_no_such_task", include_path=world.paths.tasks)
    msg = str(e.value)
    assert "lf_no_such_task" in msg and "lm-eval ls tasks" in msg and "TaskManager" in msg
    assert "--include-path" in msg and str(world.paths.tasks) in msg


def test_rolling_task_is_refused_naming_its_type(world, tmp_path):
    folder = tmp_path / "roll"
    folder.mkdir()
    data = write_jsonl(tmp_path / "roll.jsonl", [{"q": "2+2=4"}, {"q": "3+3=6"}])
    (folder / "lf_roll.yaml").write_text(
        "task: lf_roll\n"
        + local_data({"test": data}, world.paths.cache)
        + "test_split: test\noutput_type: loglikelihood_rolling\n"
        'doc_to_text: ""\ndoc_to_target: "{{q}}"\n'
    )
    with pytest.MonkeyPatch.context() as mp, offline(mp):
        with pytest.raises(UsageError, match="lf_roll.*loglikelihood_rolling"):
            lf.tasks.load("lm_eval:lf_roll", include_path=folder)


def test_missing_include_path_is_named(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(UsageError, match=f"include path {missing} does not exist"):
        lf.tasks.load("lm_eval:lf_arc", include_path=missing)
    afile = tmp_path / "a.yaml"
    afile.write_text("task: x\n")
    with pytest.raises(UsageError, match="is a file, not a folder"):
        lf.tasks.load("lm_eval:lf_arc", include_path=afile)


def test_other_bad_input(world, tmp_path):
    with pytest.raises(UsageError, match="acc_mutual_info"):  # the message lists the metrics
        Game(world.model, world.ours["lf_arc"], utility="logprob", progress=False)
    with pytest.raises(UsageError, match="exact_match"):
        Game(world.model, world.ours["lf_arc"], utility="exact_match", progress=False)
    with pytest.raises(UsageError, match="one task or group"):
        lf.tasks.load("lm_eval:lf_arc,lf_wino")
    with pytest.raises(UsageError, match="limit"):
        lf.tasks.load("lm_eval:lf_arc", include_path=world.paths.tasks, limit=0)
    jsonl = write_jsonl(tmp_path / "t.jsonl", [{"context": "a", "choices": ["b", "c"], "gold": 0}])
    with pytest.raises(UsageError, match="lm_eval:<name> tasks only"):
        lf.tasks.load(jsonl, num_fewshot=2)


# --- the command line ----------------------------------------------------------------------------
def _cli(capsys, *argv):
    rc = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_cli_ablate_on_a_harness_task(world, capsys, tmp_path):
    out = tmp_path / "abl"
    argv = ["ablate", "--model", world.model_dir, "--task", "lm_eval:lf_arc"]
    argv += ["--include-path", world.paths.tasks, "--limit", 4, "--out", out, "--no-progress"]
    with pytest.MonkeyPatch.context() as mp, offline(mp):
        rc, stdout, err = _cli(capsys, *argv, "--utility", "acc_mutual_info")
        assert rc == 0, err
        data = json.loads((out / "ablation.json").read_text())
        assert data["utility"] == "acc_mutual_info" and data["n_items"] == 4
        assert data["task"] == "lm_eval:lf_arc" and data["harness"]["limit"] == 4
        assert data["chance"] == pytest.approx(0.25)
        task = lf.tasks.load("lm_eval:lf_arc", include_path=world.paths.tasks, limit=4)
        game = Game(lf.load(world.model_dir), task, utility="acc_mutual_info", progress=False)
        assert data["full"] == pytest.approx(game(np.ones((1, 6), bool))[0], abs=1e-12)
        # winogrande has no acc_norm: the default utility is its acc
        out2 = tmp_path / "wino"
        argv2 = [a if a != "lm_eval:lf_arc" else "lm_eval:lf_wino" for a in argv[:-3]]
        rc, _, err = _cli(capsys, *argv2, "--out", out2, "--no-progress", "--num-fewshot", 1)
        assert rc == 0, err
        data = json.loads((out2 / "ablation.json").read_text())
        assert data["utility"] == "acc" and data["harness"]["tasks"]["lf_wino"]["num_fewshot"] == 1


def test_cli_checks_harness_flags_before_the_model_loads(world, capsys, tmp_path, monkeypatch):
    import layerfast.cli.common as common

    def no_model(args):
        raise AssertionError("the model loaded although a flag was already known to be bad")

    monkeypatch.setattr(common, "load_model", no_model)
    base = ["ablate", "--model", world.model_dir, "--out", tmp_path / "o", "--no-progress"]
    harness = ["--task", "lm_eval:lf_arc", "--include-path", world.paths.tasks, "--limit", 2]
    with pytest.MonkeyPatch.context() as mp, offline(mp):
        rc, _, err = _cli(capsys, *base, *harness, "--utility", "margin")
    assert rc == 2 and "--utility" in err and "acc_mutual_info" in err and "margin" in err
    jsonl = write_jsonl(tmp_path / "t.jsonl", [{"context": "a", "choices": ["b", "c"], "gold": 0}])
    for extra, words in (
        (["--utility", "acc_mutual_info"], "--utility acc_mutual_info"),
        (["--num-fewshot", 3], "--num-fewshot"),
        (["--include-path", world.paths.tasks], "--include-path"),
    ):
        rc, _, err = _cli(capsys, *base, "--task", jsonl, *extra)
        assert rc == 2 and words in err and "lm_eval:" in err, err
    rc, _, err = _cli(capsys, *base, *harness[:2], "--include-path", tmp_path / "none")
    assert rc == 2 and "--include-path" in err and "does not exist" in err
    rc, _, err = _cli(capsys, *["eavss", *base[1:]], *harness)
    assert rc == 2 and "eavss" in err
    rc, _, err = _cli(capsys, *base, *harness, "--num-fewshot", -1)
    assert rc == 2 and "--num-fewshot" in err
