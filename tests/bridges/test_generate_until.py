"""lm-evaluation-harness ``generate_until`` both ways, checked against the harness's own HFLM,
fully offline:

* the harness model ``"layerfast"`` (``LayerfastLM.generate_until``) against
  ``simple_evaluate`` with ``HFLM`` whose removed sublayers' outputs are zeroed by forward hooks
  (the seed paper's way), for the full model and two coalitions: per document the generated
  string (``resps``), the filtered answers and ``exact_match`` under both filters equal; a
  string may differ only where greedy decoding met a counted near-tie (printed if so);
* the ``lm_eval:`` task kind (:class:`HarnessGenTask`): its prompts decoded with
  ``generate_ids`` give the same texts, and its scorer the harness's per-document scores;
* bad input: sampling options, ``max_gen_toks`` 0 and the like are one-line errors.

The task is gsm8k-shaped (``lf_gsm``): a local JSONL, 2-shot from a ``train`` split,
``until: ["\\n\\n", "Question:"]``, ``max_gen_toks: 32``, gsm8k's two filters (``strict-match``:
regex ``#### (-?[0-9.,]+)`` + take_first; ``flexible-extract``) and its ``exact_match``. It runs on
the packaged SmolLM2-135M (meaningful answers, tests marked slow) and on a tiny random Llama
(cheap; its 128-token limit left-truncates the few-shot contexts on both sides).
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("lm_eval")

import layerfast as lf  # noqa: E402
from layerfast.bridges.lm_eval_gen_tasks import HarnessGenTask  # noqa: E402
from layerfast.bridges.lm_eval_generate import generate_texts  # noqa: E402
from layerfast.errors import UsageError  # noqa: E402
from layerfast.tasks.prompts import GenerativeScorer, GenerativeTask  # noqa: E402
from tests.bridges.local import ZeroingHooks, go_offline, write_mc_task  # noqa: E402
from tests.helpers.harness import tiny_llama_folder, write_jsonl  # noqa: E402

TASK = "lf_gsm"
FILTERS = ("strict-match", "flexible-extract")
COALITIONS = ["", "attn1;mlp0", "attn3;mlp7;attn12"]  # the full model, then two coalitions
TINY_COALITIONS = ["", "attn1;mlp0", "mlp2"]
TINY_POSITIONS = 128  # the tiny model's limit: the 2-shot contexts are longer

SHOTS = [
    ("Tom has 2 apples and buys 3 more. How many apples does Tom have?", "Tom has 2 + 3 = 5", 5),
    ("A box holds 4 pens. How many pens are in 2 boxes?", "2 boxes hold 2 * 4 = 8 pens", 8),
    ("Mia had 10 stickers and gave away 6. How many are left?", "Mia has 10 - 6 = 4", 4),
]
DOCS = [
    ("Sara has 7 cookies and eats 2. How many cookies are left?", "Sara has 7 - 2 = 5", 5),
    ("A car has 4 wheels. How many wheels do 3 cars have?", "3 cars have 3 * 4 = 12 wheels", 12),
    ("Ben reads 10 pages a day. How many pages does he read in 3 days?", "3 * 10 = 30", 30),
    ("There are 9 birds on a tree and 4 fly away. How many birds are left?", "9 - 4 = 5", 5),
]
GSM_YAML = """\
output_type: generate_until
training_split: train
fewshot_split: train
test_split: test
num_fewshot: 2
doc_to_text: "Question: {{question}}\\nAnswer:"
doc_to_target: "{{answer}}"
generation_kwargs:
  until: ["\\n\\n", "Question:"]
  max_gen_toks: 32
  do_sample: false
filter_list:
  - name: "strict-match"
    filter:
      - function: "regex"
        regex_pattern: "#### (\\\\-?[0-9\\\\.\\\\,]+)"
      - function: "take_first"
  - name: "flexible-extract"
    filter:
      - function: "regex"
        group_select: -1
        regex_pattern: "(-?[$0-9.,]{2,})|(-?[0-9]+)"
      - function: "take_first"
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
    ignore_case: true
    ignore_punctuation: true
    regexes_to_ignore: [",", "\\\\$", "(?s).*#### ", "\\\\.$"]
"""


def _rows(items) -> list[dict]:
    return [{"question": q, "answer": f"{a}.\n#### {n}"} for q, a, n in items]


def write_gsm_task(folder: Path, name: str = TASK, body: str = GSM_YAML) -> Path:
    """``folder/name.yaml`` over ``name.train.jsonl`` (the few-shot pool) and ``name.jsonl``."""
    train = write_jsonl(folder / f"{name}.train.jsonl", _rows(SHOTS))
    test = write_jsonl(folder / f"{name}.jsonl", _rows(DOCS))
    head = textwrap.dedent(f"""\
        task: {name}
        dataset_path: json
        dataset_kwargs:
          data_files:
            train: {json.dumps(str(train))}
            test: {json.dumps(str(test))}
          cache_dir: {json.dumps(str(folder / "hf_datasets"))}
        """)
    path = folder / f"{name}.yaml"
    path.write_text(head + body, encoding="utf-8")
    return path


def evaluate(model, tasks_dir: Path, **kwargs) -> dict:
    import lm_eval
    from lm_eval.tasks import TaskManager

    import layerfast.harness

    layerfast.harness.register()
    return lm_eval.simple_evaluate(
        model=model,
        tasks=[TASK],
        task_manager=TaskManager(include_path=str(tasks_dir), include_defaults=False),
        log_samples=True,
        bootstrap_iters=0,
        random_seed=None,
        numpy_random_seed=None,
        torch_random_seed=None,
        **kwargs,
    )


def by_filter(results: dict) -> dict[str, list[dict]]:
    """The logged samples per filter, each in document order."""
    out: dict[str, list[dict]] = {}
    for s in results["samples"][TASK]:
        out.setdefault(s["filter"], []).append(s)
    for f, samples in out.items():
        samples.sort(key=lambda s: s["doc_id"])
        assert [s["doc_id"] for s in samples] == list(range(len(DOCS))), f
    assert tuple(out) == FILTERS
    return out


def texts_of(results: dict) -> list[str]:
    return [s["resps"][0][0] for s in by_filter(results)[FILTERS[0]]]


def compare(theirs: dict, ours: dict, near_ties: list[int], label: str) -> int:
    """Per document: the generated string, the filtered answers and exact_match equal under
    every filter, unless the string differs at a counted near-tie (printed). Returns the number
    of documents that differ."""
    t_texts, o_texts = texts_of(theirs), texts_of(ours)
    assert len(near_ties) == len(o_texts)
    differ = [i for i, (a, b) in enumerate(zip(t_texts, o_texts)) if a != b]
    for i in differ:
        print(
            f"{label} doc {i}: near-ties {near_ties[i]}\n"
            f"  HFLM: {t_texts[i]!r}\n  ours: {o_texts[i]!r}"
        )
        assert near_ties[i] > 0, f"{label} doc {i}: generated texts differ without a near-tie"
    t_samples, o_samples = by_filter(theirs), by_filter(ours)
    for f in FILTERS:
        for i, (a, b) in enumerate(zip(t_samples[f], o_samples[f])):
            assert a["arguments"] == b["arguments"], (label, f, i)
            if i in differ:
                continue
            assert a["filtered_resps"] == b["filtered_resps"], (label, f, i)
            assert a["exact_match"] == b["exact_match"], (label, f, i)
        if not differ:
            key = f"exact_match,{f}"
            assert ours["results"][TASK][key] == theirs["results"][TASK][key], (label, key)
    return len(differ)


def _mask(model, remove: str) -> np.ndarray:
    removed = set(filter(None, remove.replace(";", ",").split(",")))
    return np.array([p not in removed for p in model.players])


# --- SmolLM2-135M: meaningful answers --------------------------------------------------------


@pytest.fixture(scope="module")
def smol_runs(tmp_path_factory):
    from lm_eval.models.huggingface import HFLM

    from layerfast.harness import LayerfastLM

    tmp = tmp_path_factory.mktemp("gen_smol")
    with pytest.MonkeyPatch.context() as mp:
        go_offline(mp)
        model = lf.load("smollm2-135m")
        tasks = tmp / "tasks"
        write_gsm_task(tasks)
        # one left-padded batch per coalition, as our side runs them: a few times faster
        # than one document at a time on a CPU
        hf = HFLM(pretrained=model.hf_model, tokenizer=model.tokenizer, batch_size=len(DOCS))
        hooks = ZeroingHooks(hf.model, model.tokenizer)
        runs, near = {}, {}
        for remove in COALITIONS:
            hooks.removed = set(filter(None, remove.split(";")))
            theirs = evaluate(hf, tasks)
            hooks.removed = set()
            if remove == COALITIONS[1]:  # by name, as a user types it
                args = f"pretrained=smollm2-135m,remove={remove},progress=false"
                ours = evaluate("layerfast", tasks, model_args=args)
                near[remove] = None  # from the task's own run below
            else:
                lm = LayerfastLM(pretrained=model, remove=remove, progress=False)
                ours = evaluate(lm, tasks)
                near[remove] = list(lm.near_ties)
            runs[remove] = SimpleNamespace(theirs=theirs, ours=ours)
        hooks.close()
        task = lf.tasks.load(f"lm_eval:{TASK}", include_path=tasks)
        prompts = task.prompts(model.tokenizer, 8192)
        texts, tokens, ties = generate_texts(model, prompts, _mask(model, COALITIONS[1]))
        near[COALITIONS[1]] = ties
    return SimpleNamespace(
        model=model, runs=runs, near=near, task=task, prompts=prompts, texts=texts, tokens=tokens
    )


@pytest.mark.slow
@pytest.mark.parametrize("remove", COALITIONS)
def test_smollm_generations_match_hooked_hflm(smol_runs, remove):
    run = smol_runs.runs[remove]
    n_differ = compare(run.theirs, run.ours, smol_runs.near[remove], f"smollm remove={remove!r}")
    if remove == "":  # the data and model give real answers: some right, stopped at a stop
        strict = by_filter(run.ours)["strict-match"]
        assert sum(s["exact_match"] for s in strict) >= 1, n_differ
        assert all("####" in t for t in texts_of(run.ours))
    assert run.ours["config"]["layerfast"]["removed"] == [r for r in remove.split(";") if r]


@pytest.mark.slow
def test_smollm_task_scores_equal_the_harness(smol_runs):
    """The lm_eval: task's prompts decoded by generate_ids give the harness model's texts, and
    its scorer the harness's per-document exact_match under both filters."""
    task, texts = smol_runs.task, smol_runs.texts
    run = smol_runs.runs[COALITIONS[1]].ours
    assert texts == texts_of(run)
    scorer = task.scorer(smol_runs.prompts)
    samples = by_filter(run)
    for utility, f in (
        ("exact_match", "strict-match"),
        ("exact_match,flexible-extract", FILTERS[1]),
    ):
        want = np.array([s["exact_match"] for s in samples[f]], dtype=np.float64)
        got = scorer.per_item(texts, utility)
        assert got.dtype == np.float64 and np.array_equal(got, want), utility
        assert scorer(texts, utility) == run["results"][TASK][f"exact_match,{f}"]
        assert float(got.mean()) == pytest.approx(scorer(texts, utility), abs=1e-15)
    # stop strings: every text that stopped early is cut before "\n\n" / "Question:"
    eos = smol_runs.model.tokenizer.eos_token_id
    for p, tokens, text in zip(smol_runs.prompts, smol_runs.tokens, texts):
        assert "\n\n" not in text and "Question:" not in text
        if len(tokens) < p.max_new_tokens:
            decoded = smol_runs.model.tokenizer.decode(tokens)
            assert any(s in decoded for s in p.until) or tokens[-1] == eos


# --- a tiny random Llama: cheap, and truncation ----------------------------------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from lm_eval.models.huggingface import HFLM

    from layerfast.harness import LayerfastLM

    tmp = tmp_path_factory.mktemp("gen_tiny")
    with pytest.MonkeyPatch.context() as mp:
        go_offline(mp)
        folder = tiny_llama_folder(tmp / "model", max_positions=TINY_POSITIONS, seed=1, init=0.3)
        tasks = tmp / "tasks"
        write_gsm_task(tasks)
        write_mc_task(tasks, "lf_mc")
        hf = HFLM(pretrained=str(folder), device="cpu", dtype="float32", batch_size=1)
        hooks = ZeroingHooks(hf.model, hf.tokenizer)
        runs = {}
        for remove in TINY_COALITIONS:
            hooks.removed = set(filter(None, remove.split(";")))
            theirs = evaluate(hf, tasks)
            hooks.removed = set()
            lm = LayerfastLM(pretrained=str(folder), remove=remove, dtype="float32", progress=False)
            ours = evaluate(lm, tasks)
            runs[remove] = SimpleNamespace(theirs=theirs, ours=ours, near=list(lm.near_ties))
        hooks.close()
        task = lf.tasks.load(f"lm_eval:{TASK}", include_path=tasks)
    return SimpleNamespace(folder=folder, tasks=tasks, runs=runs, task=task, lm=lm)


@pytest.mark.parametrize("remove", TINY_COALITIONS)
def test_tiny_generations_match_hooked_hflm(tiny, remove):
    run = tiny.runs[remove]
    compare(run.theirs, run.ours, run.near, f"tiny remove={remove!r}")
    assert all(len(t) > 0 for t in texts_of(run.ours))


def test_task_kind_shape(tiny):
    task, tok = tiny.task, tiny.lm.tokenizer
    assert isinstance(task, HarnessGenTask) and isinstance(task, GenerativeTask)
    assert task.generative is True and len(task) == len(DOCS)
    assert task.name == f"lm_eval:{TASK}" and task.source == str(tiny.tasks)
    assert task.utilities == ("exact_match", "exact_match,flexible-extract")
    assert task.default_utility == "exact_match"
    assert task.check_utility(None) == "exact_match"
    assert task.check_utility("exact_match,strict-match") == "exact_match"  # the harness's key
    with pytest.raises(UsageError, match="'acc' is not a metric.*exact_match,flexible-extract"):
        task.check_utility("acc")
    assert task.notes["tasks"][TASK]["num_fewshot"] == 2
    assert (
        task.fingerprint()
        == lf.tasks.load(f"lm_eval:{TASK}", include_path=tiny.tasks).fingerprint()
    )
    prompts = task.prompts(tok, TINY_POSITIONS)
    assert [p.unit for p in prompts] == list(range(len(DOCS)))
    assert all(p.until == ("\n\n", "Question:", "</s>") and p.max_new_tokens == 32 for p in prompts)
    assert all(len(p.input_ids) == TINY_POSITIONS - 32 and p.n_dropped > 0 for p in prompts)
    # the contexts are the harness's: the same instances the harness model was given
    logged = [s["arguments"][0][0] for s in by_filter(tiny.runs[""].ours)[FILTERS[0]]]
    assert [inst.args[0] for insts in task.instances for inst in insts] == logged
    scorer = task.scorer(prompts)
    assert isinstance(scorer, GenerativeScorer) and scorer.chance("exact_match") is None
    texts = ["2 + 3 = 5.\n#### 5", "#### 12", "it is 30", "#### 4"]
    assert scorer.per_item(texts, "exact_match").tolist() == [1.0, 1.0, 0.0, 0.0]
    assert scorer.per_item(texts, "exact_match,flexible-extract").tolist() == [1.0, 1.0, 1.0, 0.0]
    assert scorer(texts, "exact_match") == 0.5
    with pytest.raises(ValueError, match="expected 4 generated strings"):
        scorer.per_item(texts[:3], "exact_match")


# --- bad input -------------------------------------------------------------------------------


def _request(gen_kwargs, context="Question: 2 + 2?\nAnswer:"):
    return SimpleNamespace(args=(context, gen_kwargs), task_name="lf_bad")


@pytest.mark.parametrize(
    "gen_kwargs, message",
    [
        (
            {"until": ["\n"], "do_sample": True},
            r"do_sample=True asks for sampling; layerfast decodes greedily",
        ),
        (
            {"until": ["\n"], "temperature": 0.7},
            r"temperature=0.7 without do_sample asks for sampling",
        ),
        ({"until": ["\n"], "max_gen_toks": 0}, r"max_gen_toks must be >= 1, got 0"),
        ({"max_gen_toks": -3}, r"max_gen_toks must be >= 1, got -3"),
        ({"max_gen_toks": "many"}, r"max_gen_toks must be a whole number >= 1, got 'many'"),
        ({"num_beams": 4}, r"num_beams=4 is not greedy decoding"),
        ({"repetition_penalty": 1.3}, r"repetition_penalty=1.3 is not greedy"),
        ({"penalty_alpha": 0.6}, r"penalty_alpha=0.6 is not supported; layerfast decodes greedily"),
        ({"until": {"a": 1}}, r"until must be a string or a list of strings"),
        ({"until": ["\n", 3]}, r"stop strings \(until\) must be strings"),
        ({"max_gen_toks": TINY_POSITIONS}, r"max_gen_toks=128 leaves no room for the context"),
        ("greedy", r"generation options must be a dict"),
    ],
)
def test_bad_generation_options_are_one_line_errors(tiny, gen_kwargs, message):
    with pytest.raises(UsageError, match=message) as e:
        tiny.lm.generate_until([_request(gen_kwargs)])
    assert "\n" not in str(e.value) and "task lf_bad" in str(e.value)


def test_greedy_equivalents_of_the_harness_are_accepted(tiny):
    """What HFLM decodes greedily is accepted: no until and no max_gen_toks (EOS and 256 new
    tokens, capped by the context room here), do_sample false with a temperature, sampling-only
    options without sampling, a bare string until, the max_new_tokens alias."""
    lm = tiny.lm
    base = lm.generate_until([_request({"until": "\n", "max_new_tokens": 5})])
    same = lm.generate_until(
        [
            _request(
                {
                    "until": ["\n"],
                    "max_gen_toks": 5,
                    "do_sample": False,
                    "temperature": 0.7,
                    "top_p": 0.9,
                    "top_k": 5,
                    "num_beams": 1,
                }
            )
        ]
    )
    assert base == same and isinstance(base[0], str)
    (text,) = lm.generate_until([_request({"max_gen_toks": 6})])  # no until: EOS stops
    assert len(lm.tokenizer.encode(text)) <= 6 + 2 and lm.max_gen_toks == 256
    # neither: HFLM's 256 new tokens, more than this model's 128-token limit leaves room for
    with pytest.raises(UsageError, match="max_gen_toks=256 leaves no room .* max_length=128"):
        lm.generate_until([_request({})])


def test_sampling_task_is_refused_at_load(tiny, tmp_path):
    body = GSM_YAML.replace("do_sample: false", "do_sample: true\n  temperature: 0.8")
    write_gsm_task(tmp_path, "lf_sample", body)
    with pytest.MonkeyPatch.context() as mp:
        go_offline(mp)
        with pytest.raises(
            UsageError, match=r"task lf_sample: generation option do_sample=True"
        ) as e:
            lf.tasks.load("lm_eval:lf_sample", include_path=tmp_path)
    assert "\n" not in str(e.value)


def test_other_output_types_and_mixed_groups_are_refused(tiny, tmp_path):
    write_gsm_task(tmp_path)
    write_mc_task(tmp_path, "lf_mc")
    (tmp_path / "lf_roll.yaml").write_text(
        (tmp_path / "lf_mc.yaml")
        .read_text()
        .replace("task: lf_mc", "task: lf_roll")
        .replace("output_type: multiple_choice", "output_type: loglikelihood_rolling")
    )
    (tmp_path / "lf_mix.yaml").write_text("group: lf_mix\ntask:\n  - lf_gsm\n  - lf_mc\n")
    with pytest.MonkeyPatch.context() as mp:
        go_offline(mp)
        with pytest.raises(
            UsageError,
            match=r"lf_roll .*'loglikelihood_rolling'; layerfast scores multiple_choice and "
            "generate_until",
        ):
            lf.tasks.load("lm_eval:lf_roll", include_path=tmp_path)
        with pytest.raises(
            UsageError,
            match=r"lm_eval:lf_mix holds 2 tasks, 1 of output_type generate_until \(lf_gsm\) "
            r"besides multiple_choice \(lf_mc\)",
        ) as e:
            lf.tasks.load("lm_eval:lf_mix", include_path=tmp_path)
        assert "\n" not in str(e.value)
