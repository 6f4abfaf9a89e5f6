"""Text tasks (``lf.tasks.text``, ``--task text:<spec>``): windows, the nll and ppl utilities
against a plain HF forward and :func:`~layerfast.evaluation.perplexity.perplexity`, coalitions,
both executors, the CLI and bad input.

Tolerances (fp32, the tiny random Llama): nll within 1e-5 nats of the HF loss; ppl within a
relative 1e-5 of ``perplexity`` (same windows, batched differently); the prefix and naive
executors bit for bit.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import layerfast as lf
from layerfast import cli
from layerfast.errors import UsageError
from layerfast.evaluation.naive_executor import NaiveExecutor
from layerfast.evaluation.perplexity import perplexity
from layerfast.tasks.task import TaskFormatError
from layerfast.tasks.text_task import TextTask, text_requests
from layerfast.tasks.texts import calibration_texts
from tests.cli.test_cli import save_tiny_model, strict_json

# 3 documents; the first is longer than the window lengths used (3 windows at max_length 16),
# the last is a single word (BOS + 1 token: one scored token)
DOCS = [
    "the cat sat on the mat and the dog sat on the log. The quick brown fox jumps over the lazy "
    "dog. Athens is to Greece as Baghdad is to Iraq",
    "Q: What is the capital of France?\nA: Paris",
    "Lima",
]
L = 16  # max_length of the windows in most tests (the tiny Llama's own limit is 128)


@pytest.fixture(scope="module")
def task():
    return TextTask("tiny", DOCS)


def game(model, task, utility="nll", max_length=L, **kw):
    return lf.Game(model, task, utility=utility, max_length=max_length, progress=False, **kw)


def windows(tokenizer, text, max_length):
    """The reference windows of one document: BOS + its tokens, cut every ``max_length``."""
    ids = [tokenizer.bos_token_id] + tokenizer.encode(text)
    return [ids[i : i + max_length] for i in range(0, len(ids), max_length)]


def hf_nll(model, texts, max_length):
    """-(token-weighted mean of ``hf_model(ids, labels=ids).loss`` over every window)."""
    total, count = 0.0, 0
    for text in texts:
        for w in windows(model.tokenizer, text, max_length):
            if len(w) < 2:
                continue
            ids = torch.tensor([w])
            with torch.no_grad():
                loss = model.hf_model(input_ids=ids, labels=ids).loss
            total += float(loss.double()) * (len(w) - 1)
            count += len(w) - 1
    return -total / count


def random_masks(n_players, k, seed):
    rng = np.random.default_rng(seed)
    return rng.random((k, n_players)) < 0.6


# --- windows -------------------------------------------------------------------------------------
@pytest.mark.parametrize("max_length", [2, 7, L, 128])
def test_windows_of_a_document_longer_than_max_length(tiny_llama, task, max_length):
    tok = tiny_llama.tokenizer
    requests = task.requests(tok, max_length)
    expected = [
        (d, w) for d, text in enumerate(DOCS) for w in windows(tok, text, max_length) if len(w) > 1
    ]
    assert len(requests) == len(expected)
    for i, (r, (d, w)) in enumerate(zip(requests, expected)):
        assert r.group == i and r.unit == d  # one packing group per window; unit: document
        assert r.input_ids == tuple(w[:-1]) and r.targets == tuple(w[1:])
        assert len(r.input_ids) + 1 <= max_length and r.n_dropped == 0
    n_ids = [len(tok.encode(t)) + 1 for t in DOCS]
    scored = sum(len(r.targets) for r in requests)
    assert scored == sum(n - math.ceil(n / max_length) for n in n_ids)  # first of each window
    if max_length == L:
        assert [r.unit for r in requests].count(0) == math.ceil(n_ids[0] / L) >= 3


def test_nll_equals_the_hf_loss(tiny_llama, task):
    """v(N) = -(token-weighted mean HF loss over the windows), within 1e-5 nats in fp32."""
    for max_length in (L, 128):
        g = game(tiny_llama, task, max_length=max_length)
        v = g(g.full_mask())[0]
        assert v == pytest.approx(hf_nll(tiny_llama, DOCS, max_length), abs=1e-5)
        assert v < 0  # a log-likelihood: higher is better
        unpacked = game(tiny_llama, task, max_length=max_length, pack=False)
        assert unpacked(unpacked.full_mask())[0] == pytest.approx(v, abs=1e-5)


def test_ppl_matches_perplexity(tiny_llama, task):
    g = game(tiny_llama, task, utility="ppl")
    masks = np.ones((2, tiny_llama.n_players), dtype=bool)
    masks[1, [1, 4]] = False
    got = g(masks)
    for keep, value in zip(masks, got):
        ref = perplexity(tiny_llama, DOCS, keep=keep, max_length=L, batch_size=2)
        assert value == pytest.approx(-ref, rel=1e-5)  # v = -perplexity: higher is better
    nll = g.with_utility("nll")(masks)
    np.testing.assert_allclose(got, -np.exp(-nll), rtol=1e-12)


def test_a_coalition_changes_nll_and_equals_a_direct_naive_computation(tiny_llama, task):
    g = game(tiny_llama, task)
    masks = np.ones((3, tiny_llama.n_players), dtype=bool)
    masks[1, 2] = False  # attn1 off
    masks[2, [0, 3, 5]] = False
    values = g(masks)
    assert values[1] != values[0] and values[2] != values[0]
    direct = NaiveExecutor(tiny_llama, g.requests, batch_tokens=g.sizing["batch_tokens"], pack=True)
    tokens = sum(len(r.targets) for r in g.requests)
    for mask, value in zip(masks, values):
        ll = direct.loglik(mask)
        np.testing.assert_array_equal(ll, g.loglik(mask)[0])
        assert value == ll.sum() / tokens
    # and a from-scratch reference: the model's own logits with those players skipped
    for mask, value in zip(masks, values):
        total, count = 0.0, 0
        for text in DOCS:
            for w in windows(tiny_llama.tokenizer, text, L):
                with torch.no_grad():
                    logits = tiny_llama(torch.tensor([w]), keep=mask)[0, :-1].double()
                total += float(torch.log_softmax(logits, -1)[torch.arange(len(w) - 1), w[1:]].sum())
                count += len(w) - 1
        assert value == pytest.approx(total / count, abs=1e-5)


@pytest.mark.parametrize("pack", [True, False])
def test_prefix_executor_equals_naive_bit_for_bit(tiny_llama, task, pack):
    n = tiny_llama.n_players
    masks = np.concatenate(
        [np.ones((1, n), bool), ~np.eye(n, dtype=bool), random_masks(n, 7, seed=3)]
    )
    fast = game(tiny_llama, task, executor="prefix", pack=pack, batch_tokens=64)
    slow = game(tiny_llama, task, executor="naive", pack=pack, batch_tokens=64)
    assert len(fast.executor.batches) > 1
    np.testing.assert_array_equal(fast.loglik(masks), slow.loglik(masks))
    np.testing.assert_array_equal(fast(masks), slow(masks))


# --- per-item terms, ablation -------------------------------------------------------------------
def test_per_item_terms(tiny_llama, task):
    g = game(tiny_llama, task)
    mask = np.ones(tiny_llama.n_players, dtype=bool)
    mask[3] = False
    ll = g.loglik(mask)[0]
    doc = np.array([r.unit for r in g.requests])
    n_tokens = sum(len(r.targets) for r in g.requests)
    nll_d = np.array([-ll[doc == d].sum() for d in range(len(DOCS))])
    terms = g.per_item(mask)
    assert terms.shape == (len(DOCS),)
    np.testing.assert_allclose(terms, -nll_d * len(DOCS) / n_tokens, rtol=1e-12)
    assert terms.mean() == pytest.approx(g(mask[None])[0], rel=1e-12)
    v_ppl = g.with_utility("ppl")(mask[None])[0]
    ppl_terms = g.per_item(mask, "ppl")  # delta-method linearisation around the coalition
    m = nll_d.sum() / n_tokens
    np.testing.assert_allclose(ppl_terms, v_ppl * (1 + nll_d * len(DOCS) / n_tokens - m))
    assert ppl_terms.mean() == pytest.approx(v_ppl, rel=1e-12)


def test_ablate_has_no_chance_level(tiny_llama, task):
    g = game(tiny_llama, task)
    assert g.chance is None and g.with_utility("ppl").chance is None
    abl = lf.ablate(g)
    assert abl.chance is None and abl.cornerstones == []
    np.testing.assert_allclose(abl.drops, abl.full - abl.values)
    # given a chance level the per-document terms feed the tests without error
    lf.ablate(g.with_utility("ppl"), chance=2 * abl.full)


def test_two_games_on_one_task_keep_their_own_windows(tiny_llama, task):
    """Each Game's scorer is bound to the windows of its own max_length."""
    short = game(tiny_llama, task, max_length=4)
    long = game(tiny_llama, task, max_length=128)
    assert len(short.requests) > len(long.requests)
    assert short(short.full_mask())[0] == pytest.approx(hf_nll(tiny_llama, DOCS, 4), abs=1e-5)
    assert long(long.full_mask())[0] == pytest.approx(hf_nll(tiny_llama, DOCS, 128), abs=1e-5)
    requests = text_requests(DOCS, tiny_llama.tokenizer, 4)
    scorer = task.scorer(requests)
    assert scorer(short.loglik(short.full_mask())[0], "nll") == short(short.full_mask())[0]


# --- loading -----------------------------------------------------------------------------------
def test_sources_and_limit(tmp_path):
    txt = tmp_path / "docs.txt"
    txt.write_text("\ufeffthe first\n\n  the second  \nthe third\n", encoding="utf-8")
    assert lf.tasks.text(txt).documents == ["the first", "the second", "the third"]
    assert lf.tasks.load(f"text:{txt}", limit=2).documents == ["the first", "the second"]
    jsonl = tmp_path / "docs.jsonl"
    jsonl.write_text(
        "\n".join(json.dumps({"text": t, "id": i}) for i, t in enumerate(["a b\nc", " ", "d"])),
        encoding="utf-8",
    )
    t = lf.tasks.load(f"text:{jsonl}")
    assert t.documents == ["a b\nc", "d"] and t.name == f"text:{jsonl}" and len(t) == 2
    pydoc = lf.tasks.text("pydoc", n=3)
    assert pydoc.documents == calibration_texts("pydoc", 3) and pydoc.name == "text:pydoc"
    assert lf.tasks.load("text:pydoc", limit=3).fingerprint() == pydoc.fingerprint()
    assert lf.tasks.load(pydoc, limit=2).documents == pydoc.documents[:2]
    assert lf.tasks.load(pydoc) is pydoc
    assert lf.tasks.text("text:pydoc", 2).fingerprint() != pydoc.fingerprint()
    assert any(name.startswith("text:") for name in lf.tasks.available())


@pytest.mark.slow
def test_lee():
    t = lf.tasks.load("text:lee", limit=2)
    assert t.documents == calibration_texts("lee", 2) and len(t) == 2


def test_bad_input(tmp_path, tiny_llama, task):
    with pytest.raises(UsageError, match="unknown text task text:nosuch.*'lee'"):
        lf.tasks.load("text:nosuch")
    with pytest.raises(UsageError, match="names no text"):
        lf.tasks.load("text:")
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n", encoding="utf-8")
    with pytest.raises(TaskFormatError, match="empty.txt holds no documents"):
        lf.tasks.text(empty)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"body": "no text"}\n', encoding="utf-8")
    with pytest.raises(TaskFormatError, match=r"bad.jsonl:2: .*\"text\" field"):
        lf.tasks.text(bad)
    bad.write_text('{"text": 3}\n', encoding="utf-8")
    with pytest.raises(TaskFormatError, match=r"bad.jsonl:1: \"text\" must be a string"):
        lf.tasks.text(bad)
    with pytest.raises(UsageError, match="folder"):
        lf.tasks.text(tmp_path)
    with pytest.raises(UsageError, match=r"integer >= 1, got 0"):
        lf.tasks.text("pydoc", n=0)
    with pytest.raises(UsageError, match="applies to JSONL task files only"):
        lf.tasks.load("text:pydoc", delimiter="")
    with pytest.raises(UsageError, match="lm_eval:<name> tasks only"):
        lf.tasks.load("text:pydoc", num_fewshot=1)
    with pytest.raises(UsageError, match="'acc' does not apply to text task text:tiny"):
        game(tiny_llama, task, utility="acc")
    with pytest.raises(UsageError, match="max_length must be >= 2"):
        game(tiny_llama, task, max_length=1)
    with pytest.raises(TypeError):  # a scorer is made from the task's requests, never unbound
        TextTask("x", ["a"]).scorer()


# --- CLI -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, model_factory, tiny_tokenizer_fixture):
    folder = tmp_path_factory.mktemp("model") / "tiny-llama"
    return save_tiny_model(folder, model_factory, tiny_tokenizer_fixture)


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("text") / "docs.txt"
    lines = [DOCS[0], "Q: What is the capital of France?", "the cat sat on the mat", "élan 東京"]
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def run(capsys, *argv):
    rc = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_cli_ablate_and_report(capsys, model_dir, text_file, tmp_path):
    out = tmp_path / "abl"
    args = ["--model", model_dir, "--task", f"text:{text_file}", "--no-progress"]
    rc, stdout, err = run(capsys, "ablate", *args, "--utility", "nll", "--limit", 3, "--out", out)
    assert rc == 0, err
    assert "utility nll (v = -(mean negative log-likelihood per token), nats; higher" in stdout
    data = strict_json(out / "ablation.json")
    assert data["utility"] == "nll" and data["n_items"] == 3 and data["chance"] is None
    assert "higher is better" in data["utility_note"]
    model = lf.load(model_dir)
    g = lf.Game(model, lf.tasks.text(text_file, 3), utility="nll", progress=False)
    expected = lf.ablate(g)
    assert data["full"] == pytest.approx(expected.full, abs=1e-12)
    np.testing.assert_allclose(data["values"], expected.values, atol=1e-12)
    assert data["full"] == pytest.approx(
        hf_nll(model, lf.tasks.text(text_file, 3).documents, 128), abs=1e-5
    )

    out = tmp_path / "rep"
    rc, stdout, err = run(capsys, "report", *args, "--utility", "ppl", "--out", out)
    assert rc == 0, err
    report = (out / "report.md").read_text()
    assert "utility: ppl (v = -perplexity" in report and "higher is better" in report
    assert strict_json(out / "shapley.json")["n_items"] == 4


@pytest.mark.parametrize(
    "task, extra, message",
    [
        ("text:{file}", ["--utility", "acc"], "--utility: utility 'acc' does not apply to text"),
        ("text:nosuch.txt", [], "unknown text task text:nosuch.txt"),
        ("text:{empty}", [], "holds no documents"),
    ],
)
def test_cli_bad_input_fails_before_the_model_loads(
    capsys, text_file, tmp_path, monkeypatch, task, extra, message
):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n", encoding="utf-8")

    def no_load(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(lf, "load", no_load)
    task = task.format(file=text_file, empty=empty)
    out = tmp_path / "o"
    rc, _, err = run(
        capsys, "ablate", "--model", "no-such-model", "--task", task, "--out", out, *extra
    )
    assert rc == 2 and message in err, err


def test_cli_eavss_refuses_a_text_task(capsys, text_file, tmp_path):
    rc, _, err = run(
        capsys,
        "eavss",
        "--model",
        "no-such-model",
        "--task",
        f"text:{text_file}",
        "--out",
        tmp_path,
    )
    assert rc == 2 and "eavss needs multiple-choice items" in err
