"""The harness model ``"layerfast"`` against the harness's own HFLM, through
``lm_eval.simple_evaluate(model=...)`` on local tasks, fully offline.

For the full model and two coalitions, ``simple_evaluate(model="layerfast", model_args=
"pretrained=DIR,remove=...")`` is compared with ``simple_evaluate(model=HFLM(DIR))`` whose removed
sublayers' outputs are zeroed by forward hooks (the seed paper's way), on a 4-choice task
(``target_delimiter: " "``, acc / acc_norm), a loglikelihood task whose metric ``acc`` is the
harness's ``is_greedy`` (continuations made of the model's own greedy tokens and of other words,
so both flags occur) and a loglikelihood_rolling task (word / byte perplexity, several windows).
Per document: every metric equal, log-likelihoods within 1e-4 (fp32; the harness takes a full
log_softmax over the padded batch, we apply the LM head at continuation positions in vocabulary
chunks and share each context across its continuations, so the sums differ by rounding only)
and the greedy flags equal.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

pytest.importorskip("lm_eval")

from layerfast.errors import UsageError  # noqa: E402
from layerfast.evaluation.logprobs import token_logprobs, token_logprobs_greedy  # noqa: E402
from layerfast.tasks.requests import encode_pair  # noqa: E402
from tests.bridges.local import (  # noqa: E402
    MC_ITEMS,
    ZeroingHooks,
    evaluate,
    go_offline,
    samples,
    save_tiny_llama,
    write_mc_task,
    write_task,
)

ROOT = Path(__file__).resolve().parents[2]
LL_TOL = 1e-4  # fp32: full log_softmax (harness) vs chunked log-sum-exp and packing (ours)
COALITIONS = ["", "attn1,mlp2", "mlp0"]  # the full model, then two with sublayers removed
ROLLING_MAX_LENGTH = 16  # short windows, so each document spans several

MC, LL, ROLL = "lf_mc4", "lf_greedy", "lf_rolling"

LL_CONTEXTS = [
    "The quick brown fox jumps over the",
    "Q: What is the capital of France?\nA:",
    "the cat sat on the",
    "Athens is to Greece as Baghdad is to",
    "Lima Quito Bogota",
    "Which planet is known as the red",
    "élan café",
    "Москва",
    "the dog sat on the log and the",
    "The lazy",
    "Venus, Jupiter or",
    "Santiago Caracas",
]
OTHER_WORDS = [" mat", " Paris and Lima", " the", " dog.", " x"]
ROLL_TEXTS = [
    "The quick brown fox jumps over the lazy dog. The cat sat on the mat and the dog sat on the "
    "log.",
    "Lima Quito Bogota Santiago Caracas Montevideo Asuncion La Paz Sucre",
    "short",
    "Q: What is the capital of France?\nA: Paris\nQ: Which planet is known as the red planet?\n"
    "A: Mars",
]


def _greedy_targets(hf_model, tok) -> list[dict]:
    """Documents (context, target): per context the model's own greedy continuation of up to 3
    tokens where one is clean text (printable, not only digits, and tokenised back by the
    harness's rules into exactly those tokens), and for every other context also a word the
    model would not choose."""
    rows = []
    for k, context in enumerate(LL_CONTEXTS + [c for c, _, _ in MC_ITEMS]):
        ids = list(tok.encode(context))
        start = len(ids)
        with torch.no_grad():
            for _ in range(3):
                ids.append(int(hf_model(torch.tensor([ids])).logits[0, -1].argmax()))
        for n in (3, 2, 1):
            text = tok.decode(ids[start : start + n])
            if (
                text.strip()
                and text.isprintable()
                and not text.strip().isdigit()
                and encode_pair(tok, context, text)[1] == ids[start : start + n]
            ):
                rows.append({"context": context, "target": text})
                break
        if k % 2 == 0:
            rows.append({"context": context, "target": OTHER_WORDS[k % len(OTHER_WORDS)]})
    return rows


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The three tasks under both models, per coalition."""
    import layerfast.harness

    layerfast.harness.register()  # "layerfast" as a harness model name

    tmp = tmp_path_factory.mktemp("harness_lm")
    with pytest.MonkeyPatch.context() as mp:
        go_offline(mp)
        from lm_eval.models.huggingface import HFLM

        model_dir = save_tiny_llama(tmp / "model")
        hf = HFLM(pretrained=str(model_dir), device="cpu", dtype="float32", batch_size=8)
        tasks = tmp / "tasks"
        write_mc_task(tasks, MC)
        ll_rows = _greedy_targets(hf.model, hf.tokenizer)
        write_task(
            tasks,
            LL,
            ll_rows,
            """\
            output_type: loglikelihood
            doc_to_text: "{{context}}"
            doc_to_target: "{{target}}"
            target_delimiter: ""
            metric_list:
              - metric: perplexity
              - metric: acc
            """,
        )
        write_task(
            tasks,
            ROLL,
            [{"text": t} for t in ROLL_TEXTS],
            """\
            output_type: loglikelihood_rolling
            doc_to_text: ""
            doc_to_target: "{{text}}"
            metric_list:
              - metric: word_perplexity
              - metric: byte_perplexity
              - metric: bits_per_byte
            """,
        )
        hooks = ZeroingHooks(hf.model, hf.tokenizer)
        hf_short = HFLM(
            pretrained=str(model_dir),
            device="cpu",
            dtype="float32",
            batch_size=8,
            max_length=ROLLING_MAX_LENGTH,
        )
        hooks_short = ZeroingHooks(hf_short.model, hf_short.tokenizer)
        out = {}
        for remove in COALITIONS:
            hooks.removed = hooks_short.removed = set(filter(None, remove.split(",")))
            args = f"pretrained={model_dir},remove={remove},dtype=float32,progress=false"
            out[remove] = SimpleNamespace(
                harness=evaluate(hf, tasks, [MC, LL]),
                ours=evaluate("layerfast", tasks, [MC, LL], model_args=args),
                harness_roll=evaluate(hf_short, tasks, [ROLL]),
                ours_roll=evaluate(
                    "layerfast",
                    tasks,
                    [ROLL],
                    model_args=f"{args},max_length={ROLLING_MAX_LENGTH}",
                ),
            )
        hooks.close()
        hooks_short.close()
    return SimpleNamespace(
        model_dir=model_dir, tasks=tasks, runs=out, ll_rows=ll_rows, hf_short=hf_short
    )


def _lls(task_samples) -> np.ndarray:
    """Every log-likelihood of the samples, in document then request order."""
    out = []
    for s in task_samples:
        for resp in s["filtered_resps"]:
            out.append(resp[0] if isinstance(resp, (list, tuple)) else resp)
    return np.array(out, dtype=np.float64)


@pytest.mark.parametrize("remove", COALITIONS)
def test_multiple_choice_matches_hooked_hflm(runs, remove):
    run = runs.runs[remove]
    theirs, ours = samples(run.harness, MC), samples(run.ours, MC)
    assert [s["arguments"] for s in ours] == [s["arguments"] for s in theirs]
    diff = np.abs(_lls(ours) - _lls(theirs))
    assert diff.max() <= LL_TOL, f"max |diff| {diff.max():.3g}"
    for metric in ("acc", "acc_norm"):
        assert [s[metric] for s in ours] == [s[metric] for s in theirs], metric
        assert (
            run.ours["results"][MC][f"{metric},none"]
            == run.harness["results"][MC][f"{metric},none"]
        )


@pytest.mark.parametrize("remove", COALITIONS)
def test_greedy_flags_match_hooked_hflm(runs, remove):
    run = runs.runs[remove]
    theirs, ours = samples(run.harness, LL), samples(run.ours, LL)
    assert [tuple(s["arguments"][0]) for s in theirs] == [
        (r["context"], r["target"]) for r in runs.ll_rows
    ]
    greedy_theirs = [bool(s["filtered_resps"][0][1]) for s in theirs]
    greedy_ours = [bool(s["filtered_resps"][0][1]) for s in ours]
    assert greedy_ours == greedy_theirs
    assert [s["acc"] for s in ours] == [s["acc"] for s in theirs]
    assert np.abs(_lls(ours) - _lls(theirs)).max() <= LL_TOL
    if remove == "":  # the data test both flags: greedy continuations and other words
        assert 5 <= sum(greedy_theirs) < len(greedy_theirs) - 5
    results = run.ours["results"][LL]
    assert results["acc,none"] == run.harness["results"][LL]["acc,none"]
    assert results["perplexity,none"] == pytest.approx(
        run.harness["results"][LL]["perplexity,none"], rel=1e-4
    )


@pytest.mark.parametrize("remove", COALITIONS[:2])
def test_rolling_loglikelihood_matches_hooked_hflm(runs, remove):
    run = runs.runs[remove]
    theirs, ours = samples(run.harness_roll, ROLL), samples(run.ours_roll, ROLL)
    lls_theirs, lls_ours = _lls(theirs), _lls(ours)
    assert len(lls_ours) == len(ROLL_TEXTS)
    assert np.abs(lls_ours - lls_theirs).max() <= LL_TOL * 4  # sums of up to 4 windows
    tok = runs.hf_short.tokenizer
    longest = max(len(tok.encode(t)) for t in ROLL_TEXTS)
    assert longest > 2 * ROLLING_MAX_LENGTH, "the data must span several windows"
    for metric in ("word_perplexity", "byte_perplexity", "bits_per_byte"):
        assert run.ours_roll["results"][ROLL][f"{metric},none"] == pytest.approx(
            run.harness_roll["results"][ROLL][f"{metric},none"], rel=1e-4
        )


def test_results_record_the_coalition(runs):
    config = runs.runs["attn1,mlp2"].ours["config"]
    assert config["layerfast"]["removed"] == ["attn1", "mlp2"]
    assert config["layerfast"]["n_players"] == 6
    assert config["layerfast"]["packing"] == "on"
    assert runs.runs[""].ours["config"]["layerfast"]["removed"] == []


# --- the LM class directly ------------------------------------------------------------------


@pytest.fixture(scope="module")
def lm(runs):
    from layerfast.harness import LayerfastLM

    return LayerfastLM(pretrained=str(runs.model_dir), dtype="float32", progress=False)


def test_unknown_player_lists_the_valid_names(runs):
    from layerfast.harness import LayerfastLM

    with pytest.raises(UsageError, match=r"'attn7' is not a player .*attn0\.\.attn2, mlp0\.\.mlp2"):
        LayerfastLM.create_from_arg_string(f"pretrained={runs.model_dir},remove=attn1,attn7")
    with pytest.raises(UsageError, match="'atn1' is not a player name"):
        LayerfastLM(pretrained=str(runs.model_dir / "missing"), remove="atn1")  # before loading


def test_model_args_keep_commas_in_remove():
    from layerfast.bridges.lm_eval_model import parse_model_args

    assert parse_model_args("pretrained=/m,remove=attn3,mlp5,dtype=float32,max_length=64") == {
        "pretrained": "/m",
        "remove": "attn3,mlp5",
        "dtype": "float32",
        "max_length": 64,
    }
    assert parse_model_args("remove=7") == {"remove": "7"}
    with pytest.raises(UsageError, match="not key=value"):
        parse_model_args("attn3,pretrained=x")


def test_unknown_argument_and_device_twice(runs):
    from layerfast.harness import LayerfastLM

    with pytest.raises(UsageError, match="unknown argument.*parallelize"):
        LayerfastLM.create_from_arg_string(f"pretrained={runs.model_dir},parallelize=True")
    with pytest.raises(UsageError, match="device given twice"):
        LayerfastLM.create_from_arg_obj(
            {"pretrained": str(runs.model_dir), "device": "cpu"}, {"device": "cuda"}
        )


def test_generate_until_refuses_sampling_naming_the_option(lm):
    request = SimpleNamespace(
        args=("Q:", {"until": ["\n"], "do_sample": True, "max_gen_toks": 4}), task_name="gsm_like"
    )
    with pytest.raises(UsageError, match="do_sample"):
        lm.generate_until([request])


def test_shared_contexts_pack_into_one_row_and_match_unpacked(runs, lm, monkeypatch):
    """Requests that share their context tokens are one packed row; the results equal the
    unpacked layout and a run in slices of one item within the packing tolerance, greedy flags
    identical; an empty continuation scores (0.0, True) as in HFLM."""
    import layerfast.bridges.lm_eval_model as lm_module
    from layerfast.harness import LayerfastLM

    tok = lm.tokenizer
    contexts = ["Q: What is the capital of France?\nA:", "the cat sat on the", ""]
    pairs = [
        encode_pair(tok, c, cont)
        for c in contexts
        for cont in (" Paris", " mat and the dog", " Lima")
    ]
    pairs.append((list(tok.encode("the dog")), []))
    requests, where, _ = lm._requests(pairs)
    assert len({r.group for r in requests}) == len(contexts)
    assert sorted(where) == list(range(len(pairs) - 1))
    packed = lm.loglikelihood_tokens(pairs)
    unpacked = LayerfastLM(pretrained=lm.model, pack=False, progress=False).loglikelihood_tokens(
        pairs
    )
    monkeypatch.setattr(lm_module, "ITEMS_PER_CALL", 1)
    sliced = lm.loglikelihood_tokens(pairs)
    assert packed[-1] == (0.0, True) == unpacked[-1] == sliced[-1]
    for other in (unpacked, sliced):
        np.testing.assert_allclose([p[0] for p in packed], [u[0] for u in other], atol=2e-5)
        assert [p[1] for p in packed] == [u[1] for u in other]


def test_truncation_matches_hflm(runs):
    """Requests longer than max_length are left-truncated as the harness does (HFLM with the
    same max_length), with one warning counting them."""
    from layerfast.errors import LayerfastWarning
    from layerfast.harness import LayerfastLM

    limit = 12
    ours = LayerfastLM(
        pretrained=str(runs.model_dir), dtype="float32", max_length=limit, progress=False
    )
    tok = ours.tokenizer
    args = [(c, " " + ch) for c, chs, _ in MC_ITEMS for ch in chs]
    args = [a for a in args if len(encode_pair(tok, *a)[1]) < limit]  # HFLM asserts this
    n_long = sum(len(sum(encode_pair(tok, *a), [])) > limit + 1 for a in args)
    assert n_long >= 5, "the data must hold requests longer than the limit"
    requests = [SimpleNamespace(args=a) for a in args]
    hf = runs.hf_short
    hf._max_length = limit
    try:
        with pytest.warns(LayerfastWarning, match=f"{n_long} of {len(args)} requests .* left-t"):
            got = ours.loglikelihood(requests)
        want = hf.loglikelihood(requests, disable_tqdm=True)
    finally:
        hf._max_length = ROLLING_MAX_LENGTH
    np.testing.assert_allclose([g[0] for g in got], [w[0] for w in want], atol=LL_TOL)
    assert [g[1] for g in got] == [w[1] for w in want]


# --- greedy tracking in the chunked log-probs ------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("softcap", [None, 5.0])
def test_greedy_flags_equal_full_argmax(dtype, softcap):
    """is_greedy from the running maximum over vocabulary chunks (37 of a 301-token vocabulary)
    equals ``argmax(full logits) == target``, with exact ties placed across chunk edges and
    within a chunk (torch.argmax gives a tie to the lower id); the log-probs are bit-identical
    to :func:`token_logprobs`."""
    g = torch.Generator().manual_seed(3)
    n, d, vocab, chunk = 41, 16, 301, 37
    hidden = torch.randn(n, d, generator=g).to(dtype)
    weight = torch.randn(vocab, d, generator=g).to(dtype)
    bias = torch.randn(vocab, generator=g).to(dtype)
    # exact ties: rows 36 = 37 (chunk edge), 100 = 290 (far chunks), 5 = 6 (within a chunk)
    for a, b in ((36, 37), (100, 290), (5, 6)):
        weight[b], bias[b] = weight[a], bias[a]
    # make the tied rows the maximum for some positions: hidden along a tied row
    for i, row in enumerate((36, 100, 5)):
        hidden[3 * i : 3 * i + 3] = weight[row]
    logits = torch.nn.functional.linear(hidden, weight, bias).float()
    if softcap:
        logits = torch.tanh(logits / softcap) * softcap
    top = logits.argmax(dim=-1)
    targets = torch.randint(0, vocab, (n,), generator=g)
    targets[::2] = top[::2]  # half the targets greedy
    # at the tied positions: the lower id (greedy), the higher id (tied, not greedy)
    targets[0:9] = torch.tensor([36, 37, 36, 100, 290, 100, 5, 6, 5])
    want = targets == top
    assert bool(want[0]) and not bool(want[1]) and bool(want[3]) and not bool(want[4])
    lp, greedy = token_logprobs_greedy(hidden, weight, targets, bias, softcap, chunk=chunk)
    assert greedy.dtype == torch.bool and greedy.shape == (n,)
    assert torch.equal(greedy, want)
    assert torch.equal(lp, token_logprobs(hidden, weight, targets, bias, softcap, chunk=chunk))
    # one chunk over the whole vocabulary, and the harness's log_softmax argmax (fp32)
    assert torch.equal(
        token_logprobs_greedy(hidden, weight, targets, bias, softcap, vocab)[1], want
    )
    if dtype == torch.float32:
        harness = torch.log_softmax(logits, dim=-1).argmax(dim=-1) == targets
        assert torch.equal(greedy, harness)


# --- registration ---------------------------------------------------------------------------


def _python(code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
    )


def test_import_layerfast_stays_light_and_registration_is_explicit_either_order():
    proc = _python(
        """
        import sys
        import layerfast, layerfast.harness
        assert "lm_eval" not in sys.modules, "import layerfast imported the harness"
        assert "torch" not in sys.modules
        assert not any("layerfast" in type(f).__name__.lower() for f in sys.meta_path)
        from lm_eval.api.registry import model_registry
        assert "layerfast" not in model_registry, "registered at import: must be explicit"
        layerfast.harness.register()
        layerfast.harness.register()  # idempotent
        from lm_eval.api.registry import get_model
        assert get_model("layerfast").__module__ == "layerfast.bridges.lm_eval_model"
        assert get_model("hf").__name__ == "HFLM", "the harness's own names stay registered"
        """
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    proc = _python(
        """
        import lm_eval.evaluator  # the harness first
        import layerfast.harness
        layerfast.harness.register()
        from lm_eval.api.registry import get_model
        assert get_model("layerfast").__name__ == "LayerfastLM"
        assert get_model("hf").__name__ == "HFLM"
        """
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_simple_evaluate_by_name_in_a_fresh_process(runs):
    """What a user types: ``layerfast.harness.register()`` then
    ``lm_eval.simple_evaluate(model="layerfast", model_args="pretrained=...,remove=...")``; the
    accuracy equals the in-process run's."""
    proc = _python(
        f"""
        import layerfast.harness, lm_eval
        from lm_eval.tasks import TaskManager
        layerfast.harness.register()
        r = lm_eval.simple_evaluate(
            model="layerfast",
            model_args="pretrained={runs.model_dir},remove=attn1,mlp2,dtype=float32",
            tasks=["{MC}"],
            task_manager=TaskManager(include_path="{runs.tasks}", include_defaults=False),
            num_fewshot=0,
            bootstrap_iters=0,
        )
        print("ACC", repr(r["results"]["{MC}"]["acc,none"]))
        """
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    acc = float(proc.stdout.split("ACC")[-1].strip())
    assert acc == runs.runs["attn1,mlp2"].ours["results"][MC]["acc,none"]
