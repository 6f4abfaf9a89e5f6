"""Generative tasks: the JSONL format (errors name file and line), prompts (encoding and left
truncation), exact_match / f1 and their normalisation, the built-in ``*-gen`` tasks, subsets and
fingerprints."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from layerfast import tasks
from layerfast.errors import UsageError
from layerfast.tasks import GenItem, GenTask, Prompt, TaskFormatError, is_generative
from layerfast.tasks import builtin as builtin_module
from layerfast.tasks.gen_builtin import GEN_BUILTIN, bigbench_gen
from layerfast.tasks.gen_scoring import GenScorer, exact_match, normalise, token_f1
from layerfast.tasks.gen_task import read_gen_jsonl
from layerfast.tasks.kinds import GENERATIVE_NAMES, is_generative_spec, kind
from layerfast.tasks.prompts import GenerativeScorer, GenerativeTask
from tests.helpers.tiny_tokenizer import tiny_tokenizer

OFFLINE = os.environ.get("LAYERFAST_OFFLINE") == "1"
GOOD = {"context": "Q: What is the capital of Peru?\nA:", "targets": ["Lima"], "id": "pe"}


def write_lines(path, lines):
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def make_gen_task(name="tiny-gen", **kwargs) -> GenTask:
    items = [
        GenItem("Q: What is the capital of France?\nA:", ("Paris",), "fr"),
        GenItem("Q: What is the capital of Bolivia?\nA:", ("La Paz", "Sucre"), "bo"),
        GenItem("the cat sat on the", ("mat",), "cat"),
        GenItem("Athens is to Greece as Baghdad is to", ("Iraq",), "an"),
    ]
    return GenTask(name, items, **kwargs)


# ---- reading JSONL -----------------------------------------------------------------------------


def test_read_good_file_with_settings_line(tmp_path):
    path = write_lines(
        tmp_path / "caps.jsonl",
        [
            json.dumps({"until": ["\n", "."], "max_gen_toks": 5}),
            json.dumps(GOOD),
            "",
            json.dumps({"context": "Capital of Chile:", "targets": ["Santiago", "Santiago de C"]}),
        ],
    )
    task = tasks.load(path)
    assert isinstance(task, GenTask) and is_generative(task)
    assert task.name == "caps" and task.source == str(path) and len(task) == 2
    assert task.until == ("\n", ".") and task.max_new_tokens == 5
    assert task.items[0] == GenItem(GOOD["context"], ("Lima",), "pe")
    assert task.items[1].targets == ("Santiago", "Santiago de C")
    assert task.items[1].id == "4"  # the line number when no id is given
    # round trip
    out = tmp_path / "again.jsonl"
    task.to_jsonl(out)
    again = read_gen_jsonl(out)
    assert again.items == task.items and again.until == task.until
    assert again.max_new_tokens == task.max_new_tokens
    assert again.fingerprint() == task.fingerprint()


def test_defaults_without_settings_line(tmp_path):
    task = tasks.load(write_lines(tmp_path / "g.jsonl", [json.dumps(GOOD)]))
    assert isinstance(task, GenTask)
    assert task.until == ("\n",) and task.max_new_tokens == 16
    assert task.utilities == ("exact_match", "f1") and task.default_utility == "exact_match"


BAD_ITEMS = {
    "missing context": ({"targets": ["Lima"]}, "missing field(s) context"),
    "missing targets": ({"context": "x", "id": "a"}, "missing field(s) targets"),
    "empty targets": ({**GOOD, "targets": []}, "'targets' must be a non-empty list of strings"),
    "targets a string": ({**GOOD, "targets": "Lima"}, "non-empty list of strings, got 'Lima'"),
    "targets not strings": ({**GOOD, "targets": ["Lima", 3]}, "non-empty list of strings"),
    "context not a string": ({**GOOD, "context": 7}, "'context' must be a string"),
    "mixes choices": ({**GOOD, "choices": ["Lima", "Quito"], "gold": 0}, "mixes 'targets'"),
    "multiple-choice line": (
        {"context": "x", "choices": ["a", "b"], "gold": 0},
        "a multiple-choice item ('choices') in a file of generative items",
    ),
    "unknown field": ({**GOOD, "answer": "Lima"}, "unknown field(s) answer"),
    "per-item setting": ({**GOOD, "max_gen_toks": 3}, "set once, in the file's first line"),
    "not an object": ([1, 2], "expected a JSON object, got list"),
}


@pytest.mark.parametrize("case", sorted(BAD_ITEMS))
@pytest.mark.parametrize("reader", ["load", "read_gen_jsonl"])
def test_bad_item_line_names_file_and_line(tmp_path, case, reader):
    row, message = BAD_ITEMS[case]
    path = write_lines(tmp_path / "bad.jsonl", [json.dumps(GOOD), "", json.dumps(row)])
    read = tasks.load if reader == "load" else read_gen_jsonl
    with pytest.raises(TaskFormatError) as err:
        read(path)
    text = str(err.value)
    assert text.startswith(f"{path}:3: ") and message in text
    assert "\n" not in text


BAD_SETTINGS = {
    "max_gen_toks 0": ({"max_gen_toks": 0}, "max_gen_toks must be >= 1, got 0"),
    "max_gen_toks negative": ({"max_gen_toks": -2}, "max_gen_toks must be >= 1, got -2"),
    "max_gen_toks float": ({"max_gen_toks": 2.5}, "whole number >= 1, got 2.5"),
    "max_gen_toks string": ({"max_gen_toks": "8"}, "whole number >= 1, got '8'"),
    "max_gen_toks bool": ({"max_gen_toks": True}, "whole number >= 1, got True"),
    "until not strings": ({"until": ["\n", 1]}, "stop strings (until) must be strings"),
    "unknown setting": ({"delimiter": " "}, "unknown setting(s) 'delimiter'"),
}


@pytest.mark.parametrize("case", sorted(BAD_SETTINGS))
def test_bad_settings_line_names_file_and_line(tmp_path, case):
    row, message = BAD_SETTINGS[case]
    path = write_lines(tmp_path / "bad.jsonl", ["", json.dumps(row), json.dumps(GOOD)])
    with pytest.raises(TaskFormatError) as err:
        read_gen_jsonl(path)
    text = str(err.value)
    assert text.startswith(f"{path}:2: ") and message in text and "\n" not in text


def test_settings_line_after_an_item(tmp_path):
    path = write_lines(tmp_path / "late.jsonl", [json.dumps(GOOD), json.dumps({"until": "."})])
    with pytest.raises(TaskFormatError, match=r"late\.jsonl:2: the settings line .* first line"):
        tasks.load(path)


def test_first_line_mixing_kinds_is_read_as_generative_and_refused(tmp_path):
    row = {**GOOD, "choices": ["Lima", "Quito"], "gold": 0}
    path = write_lines(tmp_path / "mixed.jsonl", [json.dumps(row)])
    with pytest.raises(TaskFormatError, match=r"mixed\.jsonl:1: the line mixes 'targets'"):
        tasks.load(path)


def test_generative_line_in_a_multiple_choice_file(tmp_path):
    choice = {"context": "x", "choices": ["a", "b"], "gold": 0}
    path = write_lines(tmp_path / "mc.jsonl", [json.dumps(choice), json.dumps(GOOD)])
    with pytest.raises(TaskFormatError, match=r"mc\.jsonl:2: a generative item \('targets'\)"):
        tasks.load(path)


def test_file_of_settings_only(tmp_path):
    path = write_lines(tmp_path / "none.jsonl", [json.dumps({"max_gen_toks": 4})])
    with pytest.raises(TaskFormatError, match="holds no items"):
        tasks.load(path)


def test_delimiter_is_refused_for_a_generative_file(tmp_path):
    path = write_lines(tmp_path / "g.jsonl", [json.dumps(GOOD)])
    with pytest.raises(UsageError, match="applies to multiple-choice JSONL files"):
        tasks.load(path, delimiter="")
    for name in ("capitals-gen", "bigbench-gen:qa_wikidata"):
        with pytest.raises(UsageError, match="sets its own delimiter"):
            tasks.load(name, delimiter="")


# ---- construction ------------------------------------------------------------------------------


def test_empty_target_list_names_the_item():
    items = [GenItem("a", ("x",), "one"), GenItem("b", (), "two")]
    with pytest.raises(TaskFormatError) as err:
        GenTask("t", items)
    assert "item 'two' has no targets" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("bad", [0, -1, 1.5, "4", None])
def test_max_new_tokens_is_checked(bad):
    with pytest.raises(UsageError, match="max_gen_toks must be"):
        make_gen_task(max_new_tokens=bad)


def test_no_items_and_string_until():
    with pytest.raises(TaskFormatError, match="has no items"):
        GenTask("t", [])
    assert make_gen_task(until=".").until == (".",)  # one string: one stop
    assert "max_new_tokens=16" in repr(make_gen_task())


def test_misspelled_utility_lists_the_utilities():
    task = make_gen_task()
    assert task.check_utility(None) == "exact_match" and task.check_utility("f1") == "f1"
    with pytest.raises(UsageError, match="choose one of exact_match, f1"):
        task.check_utility("exact-match")


def test_protocols():
    task = make_gen_task()
    assert isinstance(task, GenerativeTask) and is_generative(task)
    assert isinstance(task.scorer(), GenerativeScorer)
    assert not is_generative(tasks.Task("mc", [tasks.Item("c", ("a", "b"), 0, "0")]))


# ---- prompts -----------------------------------------------------------------------------------


def check_prompts(task: GenTask, tokenizer) -> None:
    prompts = task.prompts(tokenizer, max_length=512)
    assert [p.unit for p in prompts] == list(range(len(task)))
    for item, p in zip(task.items, prompts):
        assert isinstance(p, Prompt)
        # the harness's generate_until encoding: tokenizer.encode(context), default specials
        assert list(p.input_ids) == list(tokenizer.encode(item.context))
        assert p.until == task.until and p.max_new_tokens == task.max_new_tokens
        assert p.n_dropped == 0


def check_truncation(tokenizer) -> None:
    long = "the cat sat on the mat " * 20
    task = GenTask(
        "long",
        [GenItem(long, ("mat",), "long"), GenItem("the cat sat on the", ("mat",), "short")],
        max_new_tokens=4,
    )
    ids = list(tokenizer.encode(long))
    assert len(ids) > 20
    long_p, short_p = task.prompts(tokenizer, max_length=20)
    # left-truncated to max_length - max_new_tokens = 16 tokens: the last 16
    assert list(long_p.input_ids) == ids[-16:] and long_p.n_dropped == len(ids) - 16
    assert short_p.n_dropped == 0 and short_p.unit == 1
    # max_length <= max_new_tokens still keeps one context token
    (one, _) = task.prompts(tokenizer, max_length=3)
    assert list(one.input_ids) == ids[-1:] and one.n_dropped == len(ids) - 1


def test_prompts_tiny_tokenizer():
    tok = tiny_tokenizer()
    check_prompts(make_gen_task(until=("\n", "."), max_new_tokens=5), tok)
    check_truncation(tok)
    empty = GenTask("e", [GenItem("", ("x",), "e")]).prompts(tok, 64)
    assert empty[0].input_ids == (tok.bos_token_id,)  # an empty context: the prefix token
    with pytest.raises(ValueError, match="no tokenizer"):
        make_gen_task().prompts(None, 64)


@pytest.fixture(scope="module")
def smollm_tokenizer():
    from transformers import AutoTokenizer

    from layerfast.models.loading import fetch_model

    return AutoTokenizer.from_pretrained(fetch_model("smollm2-135m"))


@pytest.mark.slow
@pytest.mark.skipif(OFFLINE, reason="LAYERFAST_OFFLINE=1")
def test_prompts_smollm2_tokenizer(smollm_tokenizer):
    check_prompts(make_gen_task(), smollm_tokenizer)
    check_truncation(smollm_tokenizer)


# ---- scoring -----------------------------------------------------------------------------------


def test_token_f1_by_hand():
    # "the cat sat" -> [cat, sat] (the article goes); "cat sat down" -> [cat, sat, down]
    # common 2: P = 2/2, R = 2/3, F1 = 2 * 1 * (2/3) / (1 + 2/3) = 0.8
    assert token_f1("the cat sat", "cat sat down") == pytest.approx(0.8)
    # "a b b c" -> [b, b, c]; "b b d": common {b: 2}; P = R = 2/3, F1 = 2/3
    assert token_f1("a b b c", ["b b d"]) == pytest.approx(2 / 3)
    # best over targets: vs "Lyon" 0; vs "Paris": P = 1/2, R = 1, F1 = 2/3
    assert token_f1("Paris, France", ["Lyon", "Paris"]) == pytest.approx(2 / 3)
    assert token_f1("Lima", "lima.") == 1.0  # case and punctuation go
    assert token_f1("dog", "cat") == 0.0
    assert token_f1("the", "a") == 1.0 and token_f1("", "cat") == 0.0  # both empty / one empty


def test_exact_match_options():
    assert exact_match(" The Lima. ", ["Quito", "the lima"]) == 1.0
    assert exact_match("Lima", "Quito") == 0.0
    assert exact_match("the Lima", "Lima") == 0.0  # articles stay unless asked
    assert exact_match("the Lima", "Lima", remove_articles=True) == 1.0
    assert exact_match("LIMA", "lima", ignore_case=False) == 0.0
    assert exact_match("Lima.", "Lima", ignore_punctuation=False) == 0.0
    assert exact_match(" Lima", "Lima", strip=False) == 0.0
    assert exact_match("Answer: Lima", "Lima") == 0.0
    assert exact_match("Answer: Lima", "Lima", regexes_to_ignore=[r"^Answer:\s*"]) == 1.0
    # the patterns apply before lower-casing, as in the harness
    assert exact_match("Answer: Lima", "Lima", regexes_to_ignore=[r"^answer:\s*"]) == 0.0
    assert exact_match("Lima 2", "lima", ignore_numbers=True) == 1.0
    assert normalise("  The  Cat, sat! ", remove_articles=True) == "cat sat"
    assert normalise("  The  Cat, sat! ") == "the cat sat"
    assert normalise("A.b", ignore_case=False, ignore_punctuation=False, strip=False) == "A.b"


HARNESS_CASES = [
    ("Lima.", "lima", {"ignore_case": True, "ignore_punctuation": True}),
    ("Lima.", "lima", {"ignore_case": True}),
    ("LIMA", "Lima", {"ignore_punctuation": True}),
    (" Lima", "Lima", {"ignore_case": True, "ignore_punctuation": True}),
    ("The answer is 42", "42", {"regexes_to_ignore": [r"^The answer is\s*"]}),
    ("a1b2", "ab", {"ignore_numbers": True}),
    ("a1b2", "ab", {}),
]


@pytest.mark.parametrize("prediction, target, options", HARNESS_CASES)
def test_normalisation_agrees_with_the_harness(prediction, target, options):
    metrics = pytest.importorskip("lm_eval.api.metrics")
    harness = {"ignore_case": False, "ignore_punctuation": False, **options}
    want = metrics.exact_match_hf_evaluate([prediction], [target], **harness)["exact_match"]
    ours = exact_match(prediction, [target], strip=False, remove_articles=False, **harness)
    assert ours == want


def test_scorer_by_hand():
    task = make_gen_task()
    prompts = task.prompts(tiny_tokenizer(), 64)
    scorer = task.scorer(prompts)
    texts = [" Paris", " Sucre and La Paz", " the mat", " Iran"]
    # exact: Paris yes; "sucre and la paz" is neither target; "the mat" -> "mat" yes; Iran no
    np.testing.assert_array_equal(scorer.per_item(texts, "exact_match"), [1, 0, 1, 0])
    assert scorer(texts, "exact_match") == 0.5
    # f1 item 2: [sucre, and, la, paz] vs [la, paz]: P = 2/4, R = 1, F1 = 2/3 (vs sucre: 2/5)
    np.testing.assert_allclose(scorer.per_item(texts, "f1"), [1, 2 / 3, 1, 0])
    assert scorer(texts, "f1") == pytest.approx((2 + 2 / 3) / 4)
    assert scorer.chance("exact_match") == 0.0 and scorer.chance("f1") is None
    assert scorer.accuracy_utilities == ("exact_match",)
    assert "exact" not in scorer.describe("f1") and scorer.describe("exact_match")
    assert scorer.check(None) == "exact_match"
    with pytest.raises(UsageError, match="choose one of exact_match, f1"):
        scorer.per_item(texts, "acc")


def test_scorer_reads_texts_by_unit():
    task = make_gen_task()
    prompts = task.prompts(tiny_tokenizer(), 64)[::-1]  # prompts in another order
    scorer = task.scorer(prompts)
    texts = ["Iraq", "mat", "nope", "Paris"]  # in prompt order: items 3, 2, 1, 0
    np.testing.assert_array_equal(scorer.per_item(texts, "exact_match"), [1, 0, 1, 1])


def test_scorer_counts():
    task = make_gen_task()
    scorer = GenScorer(task)
    with pytest.raises(ValueError, match="3 generated texts for the 4 prompts"):
        scorer.per_item(["a", "b", "c"], "f1")
    prompts = task.prompts(tiny_tokenizer(), 64)
    with pytest.raises(ValueError, match="3 prompts for the 4 items"):
        task.scorer(prompts[:3])
    with pytest.raises(ValueError, match="each of its 4 items once"):
        task.scorer([prompts[0]] * 4)


# ---- subsets and fingerprints ------------------------------------------------------------------


def test_subset_is_deterministic_and_follows_the_task_rule():
    items = [GenItem(f"c{k}", (f"t{k}",), str(k)) for k in range(30)]
    task = GenTask("many", items, until=(".",), max_new_tokens=3)
    a, b = task.subset(7, seed=3), task.subset(7, seed=3)
    assert a.items == b.items and len(a) == 7
    assert a.items != task.subset(7, seed=4).items
    assert [int(it.id) for it in a.items] == sorted(int(it.id) for it in a.items)  # file order
    assert a.until == (".",) and a.max_new_tokens == 3 and a.notes == {"limit": 7, "seed": 3}
    # the same indices as a multiple-choice task of the same length
    mc = tasks.Task("mc", [tasks.Item(f"c{k}", ("x", "y"), 0, str(k)) for k in range(30)])
    assert [it.id for it in mc.subset(7, seed=3).items] == [it.id for it in a.items]
    assert task.subset(None) is task and task.subset(30) is task
    with pytest.raises(UsageError, match="limit must be positive"):
        task.subset(0)
    assert tasks.load(task, limit=7, seed=3).items == a.items


def test_fingerprint():
    base = make_gen_task()
    assert base.fingerprint() == make_gen_task().fingerprint()
    assert base.fingerprint() != make_gen_task(until=("\n", ".")).fingerprint()
    assert base.fingerprint() != make_gen_task(max_new_tokens=8).fingerprint()
    items = list(base.items)
    items[0] = GenItem(items[0].context, ("Paris", "paris"), "fr")
    assert GenTask("tiny-gen", items).fingerprint() != base.fingerprint()


# ---- names -------------------------------------------------------------------------------------


def test_generative_specs():
    assert GENERATIVE_NAMES == set(GEN_BUILTIN)
    assert is_generative_spec("capitals-gen") is True
    assert is_generative_spec("bigbench-gen:qa_wikidata") is True
    assert is_generative_spec("capitals") is False
    assert is_generative_spec("bigbench:movie_recommendation") is False
    assert is_generative_spec("text:lee") is False
    assert is_generative_spec("my/tasks.jsonl") is None
    assert is_generative_spec("lm_eval:hellaswag") is None
    assert kind("capitals-gen") == kind("bigbench-gen:x") == "choice"
    names = tasks.available()
    assert "capitals-gen" in names and "analogies-gen" in names
    assert "bigbench-gen:<task>" in names


def test_bigbench_gen_from_a_task_json(monkeypatch):
    data = {
        "example_input_prefix": "\nQuestion: ",
        "examples": [
            {"input": "2+2?", "target": "4"},
            {"input": "Colour of sky?", "target": ["blue", "Blue", "blue"]},
            {"input": "Pick one", "target_scores": {"a": 1, "b": 0}},
            {"input": "Blank", "target": ["  "]},
        ],
    }
    monkeypatch.setattr(builtin_module, "bigbench_json", lambda name: (data, f"x/{name}.json"))
    task = tasks.load("bigbench-gen:toy")
    assert isinstance(task, GenTask) and task.name == "bigbench-gen:toy"
    assert [it.id for it in task.items] == ["0", "1"]
    assert task.items[0].context == "Question: 2+2?\nA:"
    assert task.items[1].targets == ("blue", "Blue")
    assert "canary" in task.notes
    data["examples"] = data["examples"][2:]
    with pytest.raises(UsageError, match="no examples with 'target' strings"):
        bigbench_gen("toy")


@pytest.mark.slow
@pytest.mark.skipif(OFFLINE, reason="LAYERFAST_OFFLINE=1")
@pytest.mark.parametrize("name", ["capitals", "analogies"])
def test_builtin_gen_tasks_match_the_multiple_choice_forms(name):
    gen = tasks.load(f"{name}-gen", limit=5)
    assert isinstance(gen, GenTask) and len(gen) == 5
    assert gen.until == ("\n", ".", ",") and gen.max_new_tokens == 8
    assert all(it.targets and all(t.strip() for t in it.targets) for it in gen.items)
    for seed in (0, 7):
        gen, mc = tasks.load(f"{name}-gen", 5, seed), tasks.load(name, 5, seed)
        assert [it.id for it in gen.items] == [it.id for it in mc.items]
        for g, m in zip(gen.items, mc.items):
            # capitals-gen puts two worked questions before the same question
            assert g.context.endswith(m.context) and g.context.count("Q: ") == (
                3 if name == "capitals" else 0
            )
            assert g.targets[0] == m.choices[m.gold]
            if name == "analogies":
                assert g.targets == (m.choices[m.gold],)
