"""Parity with lm-evaluation-harness: same items, same model -> same log-likelihoods, acc, acc_norm.

The harness is run the way a user runs it (a task YAML over a local JSONL file, ``HFLM`` loading a
saved model folder, ``simple_evaluate``), fully offline: the model and tokenizer are built here and
saved to a temporary folder, the data set is read by the ``json`` builder of ``datasets`` from a
local file into a temporary cache, and the hub is switched off (HF_HUB_OFFLINE /
HF_DATASETS_OFFLINE).
Our side scores the very model object and tokenizer the harness evaluated.

Why the log-likelihoods are close but not bit-identical: the harness computes a full
``log_softmax`` over [batch, T, vocab] logits of the whole padded batch; we apply the LM head only
at continuation positions, in vocabulary chunks with a running log-sum-exp (and our batches are
packed differently, so the matmuls see other shapes). Both are fp32; the results differ by float
rounding only (about 1e-5 here, on sums of up to 24 tokens), hence the 1e-4 tolerance.

The second part checks :func:`layerfast.evaluation.logprobs.token_logprobs` with a small vocabulary
chunk
against ``torch.log_softmax`` of the full logits, with bias and soft-capping, in fp32 and bf16.
"""

from __future__ import annotations

import json
import textwrap
from types import SimpleNamespace

import numpy as np
import pytest
import torch

pytest.importorskip("lm_eval")

import layerfast as lf  # noqa: E402
from layerfast.evaluation.game import Game  # noqa: E402
from layerfast.evaluation.logprobs import token_logprobs  # noqa: E402
from layerfast.tasks import Item, Task  # noqa: E402
from tests.helpers.tiny_tokenizer import tiny_tokenizer  # noqa: E402

TASK = "lf_parity"
LL_TOL = 1e-4  # fp32, full log_softmax (harness) vs chunked log-sum-exp (ours)
NEAR_TIE = 1e-3  # the data must not hold near-ties, or float noise could flip an argmax

# Awkward on purpose: trailing spaces and newlines in the context (the harness moves them into the
# continuation), an empty context (scored after the BOS token), a context starting with the BOS
# text, non-ASCII text in contexts and choices (acc_norm counts characters, not bytes or tokens),
# a choice with a leading space, quotes inside choices (doc_to_choice renders a Python list that
# the harness parses back), and choices of very different lengths, so acc and acc_norm disagree.
# (No context made only of digits: the harness's doc_to_text turns such a text into an int, read as
# the index of the context in a multiple-input task.)
ITEMS = [
    ("Q: What is the capital of France?\nA:", ["Paris", "Lyon", "Marseille"], 0),
    ("The cat sat on the ", ["mat", "dog", "log and the lazy fox"], 0),
    ("The quick brown fox jumps over the", ["lazy dog.", "mat", "red planet Mars"], 0),
    ("", ["élan", "café naïve", "東京"], 2),
    ("Москва is", ["big", "the capital of Russia", "x"], 1),
    (
        "Which planet is known as the red planet?",
        ["Mars", "Venus", "Jupiter", "Saturn", "Pluto"],
        0,
    ),
    ("Athens is to Greece as Baghdad is to", ["Iraq", "Iran"], 0),
    ("Q: odd spacing  \n", ["A", "B", "a much longer answer"], 2),
    ("<s>Q: starts with the BOS text\nA:", ["yes", "no"], 1),
    ("Lima Quito Bogota", ["Santiago", "Caracas", "La Paz", "Sucre"], 3),
    ("tab\tseparated\tcontext\t", ["one", "two"], 1),
    ("the dog sat on the", ["log", "the mat and the cat"], 1),
    ("ünïcödé:", ["façade", "naïve", "—"], 0),
    ("She said", ['"hi"', "it's fine", "'quoted' and \"double\""], 1),
    ("Numbers: 1 2 3", ["4", "five", "6 7 8 9 10"], 0),
    ("A:", [" leading space", "no space"], 0),
    ("The lazy dog", ["sleeps 🙂", "runs", "barks at the mat"], 2),
    ("Montevideo Asuncion", ["La Paz", "Sucre", "Lima"], 0),
    ("What is 2+2?\n", ["four", "4", "twenty-two"], 1),
    ("Paris is in", ["France", "the country of France in Europe"], 0),
    ("The capital of Japan is", ["東京", "x"], 0),
]


@pytest.fixture(scope="module")
def parity(tmp_path_factory):
    """Run the harness once on a tiny model and task; return its outputs and our Game."""
    import transformers as tf

    tmp = tmp_path_factory.mktemp("lm_eval_parity")
    with pytest.MonkeyPatch.context() as mp:
        # Offline: the env vars cover modules not imported yet; the constants cover those that
        # another test imported already (they read the variables once, at import).
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("HF_DATASETS_OFFLINE", "1")
        import datasets.config
        import huggingface_hub.constants

        mp.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
        mp.setattr(datasets.config, "HF_HUB_OFFLINE", True, raising=False)
        mp.setattr(datasets.config, "HF_DATASETS_OFFLINE", True, raising=False)

        import lm_eval
        import lm_eval.tasks
        from lm_eval.models.huggingface import HFLM

        # 1. a tiny random Llama + the tiny tokenizer, saved as a model folder
        tok = tiny_tokenizer()
        config = tf.LlamaConfig(
            vocab_size=len(tok),
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=3,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=256,
            initializer_range=0.1,
            pad_token_id=0,
            bos_token_id=1,
            eos_token_id=2,
            tie_word_embeddings=False,
        )
        with torch.random.fork_rng():
            torch.manual_seed(0)
            model = tf.LlamaForCausalLM(config).eval()
        model_dir = tmp / "model"
        model.save_pretrained(model_dir)
        tok.save_pretrained(model_dir)

        # 2. the task as JSONL
        task = Task(TASK, [Item(c, tuple(ch), g, f"q{i}") for i, (c, ch, g) in enumerate(ITEMS)])
        data = tmp / "data.jsonl"
        task.to_jsonl(data)

        # 3. the harness, the real way: task YAML + HFLM loading the folder + simple_evaluate.
        # dataset_kwargs go to datasets.load_dataset: the local file, and a cache in tmp.
        task_dir = tmp / "tasks"
        task_dir.mkdir()
        (task_dir / f"{TASK}.yaml").write_text(
            textwrap.dedent(f"""\
            task: {TASK}
            dataset_path: json
            dataset_kwargs:
              data_files:
                test: {json.dumps(str(data))}
              cache_dir: {json.dumps(str(tmp / "hf_datasets"))}
            test_split: test
            output_type: multiple_choice
            doc_to_text: "{{{{context}}}}"
            doc_to_choice: "{{{{choices}}}}"
            doc_to_target: "{{{{gold}}}}"
            target_delimiter: " "
            metric_list:
              - metric: acc
                aggregation: mean
                higher_is_better: true
              - metric: acc_norm
                aggregation: mean
                higher_is_better: true
              - metric: acc_bytes
                aggregation: mean
                higher_is_better: true
            """)
        )
        lm = HFLM(pretrained=str(model_dir), device="cpu", dtype="float32", batch_size=8)
        results = lm_eval.simple_evaluate(
            model=lm,
            tasks=[TASK],
            task_manager=lm_eval.tasks.TaskManager(include_path=str(task_dir)),
            num_fewshot=0,
            log_samples=True,
            bootstrap_iters=0,
            random_seed=None,
            numpy_random_seed=None,
            torch_random_seed=None,
        )

        # 4. ours, on the model object and tokenizer the harness evaluated
        game = Game(lf.load(lm.model, tokenizer=lm.tokenizer), task, utility="acc", progress=False)
        full = np.ones((1, game.n_players), dtype=bool)
        ours = game.loglik(full)[0]

        # What the harness tokenises, through its own loglikelihood() (which handles the empty
        # context before calling _encode_pair), stopping before the model call.
        seen = []

        def capture(requests, disable_tqdm=False, override_bs=None):
            seen.extend(requests)
            return [(0.0, False)] * len(requests)

        mp.setattr(lm, "_loglikelihood_tokens", capture)
        args = [(it.context, task.delimiter + ch) for it in task.items for ch in it.choices]
        lm.loglikelihood([SimpleNamespace(args=a) for a in args], disable_tqdm=True)

    samples = sorted(results["samples"][TASK], key=lambda s: s["doc_id"])
    assert [s["doc_id"] for s in samples] == list(range(len(task)))
    harness_ll = np.array([ll for s in samples for ll, _greedy in s["filtered_resps"]])
    return SimpleNamespace(
        lm=lm,
        task=task,
        game=game,
        full=full,
        ours=ours,
        samples=samples,
        harness_ll=harness_ll,
        metrics=results["results"][TASK],
        harness_tokens=[(ctx, cont) for _, ctx, cont in seen],
        args=args,
    )


def test_harness_builds_the_same_strings(parity):
    """The harness's (context, continuation) requests are ours, in (item, choice) order."""
    harness_args = [tuple(a) for s in parity.samples for a in s["arguments"]]
    assert harness_args == parity.args
    for s, item in zip(parity.samples, parity.task.items):
        assert s["target"] == item.gold
        assert len(s["resps"]) == len(item.choices)


def test_tokenisation_matches_harness(parity):
    """Every request's (input_ids, targets) equals what HFLM feeds its model and scores."""
    lm, requests = parity.lm, parity.game.requests
    assert [(r.group, r.unit) for r in requests] == [
        (i, c) for i, it in enumerate(parity.task.items) for c in range(len(it.choices))
    ]
    assert len(parity.harness_tokens) == len(requests)
    for r, (ctx, cont), (context, continuation) in zip(
        requests, parity.harness_tokens, parity.args
    ):
        if context:  # _encode_pair refuses an empty context; loglikelihood() handles it
            assert lm._encode_pair(context, continuation) == (ctx, cont)
        # HFLM._loglikelihood_tokens: inp = (ctx + cont)[-(max_length + 1):][:-1], scores all of
        # cont
        assert len(ctx + cont) <= lm.max_length + 1
        assert r.input_ids == tuple((ctx + cont)[-(lm.max_length + 1) :][:-1]), (
            context,
            continuation,
        )
        assert r.targets == tuple(cont), (context, continuation)
    # the awkward cases really are awkward: the empty context is scored after BOS ...
    empty = parity.task.items.index(next(it for it in parity.task.items if it.context == ""))
    assert all(r.input_ids[0] == lm.prefix_token_id for r in requests if r.group == empty)
    # ... and a trailing space of the context went into the continuation
    spaced = [it.context for it in parity.task.items].index("The cat sat on the ")
    ctx, _ = lm._encode_pair("The cat sat on the ", " mat")
    assert ctx == lm.tokenizer.encode("The cat sat on the")
    assert next(r for r in requests if r.group == spaced).input_ids[: len(ctx)] == tuple(ctx)


def test_loglikelihoods_match_harness(parity):
    """Per-choice summed log-likelihoods: |ours - harness| <= 1e-4 (see the module docstring)."""
    assert parity.ours.shape == parity.harness_ll.shape
    diff = np.abs(parity.ours - parity.harness_ll)
    assert diff.max() <= LL_TOL, f"max |diff| {diff.max():.3g} at request {diff.argmax()}"
    assert np.all(np.isfinite(parity.ours)) and np.all(parity.ours < 0)
    # resps (before filters) and filtered_resps agree: the default 'none' filter keeps them
    raw = np.array([resp[0][0] for s in parity.samples for resp in s["resps"]])
    np.testing.assert_array_equal(raw, parity.harness_ll)


@pytest.mark.parametrize("utility", ["acc", "acc_norm", "acc_bytes"])
def test_predictions_and_accuracy_match_harness(parity, utility):
    scorer, game = parity.game.scorer, parity.game
    # The harness's argmax from its own log-likelihoods (process_results: lls, lls / len(choice),
    # lls / len(choice.encode())) versus ours from our log-likelihoods.
    divisor = {"acc": lambda c: 1.0, "acc_norm": len, "acc_bytes": lambda c: len(c.encode())}[
        utility
    ]
    harness_pred, margins = [], []
    for s, item in zip(parity.samples, parity.task.items):
        lls = np.array([ll for ll, _ in s["filtered_resps"]])
        scores = lls / np.array([float(divisor(c)) for c in item.choices])
        harness_pred.append(int(np.argmax(scores)))
        margins.append(np.diff(np.sort(scores)[-2:])[0])
    assert min(margins) > NEAR_TIE, "test data: a near-tie makes the comparison fragile"
    np.testing.assert_array_equal(scorer.predictions(parity.ours, utility), harness_pred)

    # per item: the harness's per-sample metric; aggregate: its reported mean
    per_item = game.per_item(parity.full, utility)
    np.testing.assert_array_equal(per_item, [s[utility] for s in parity.samples])
    assert game.with_utility(utility)(parity.full)[0] == parity.metrics[f"{utility},none"]


def test_acc_and_acc_norm_disagree_somewhere(parity):
    """The data really tests the length normalisation (and chars vs bytes)."""
    s = parity.game.scorer
    acc, norm, byte = (s.predictions(parity.ours, u) for u in ("acc", "acc_norm", "acc_bytes"))
    assert (acc != norm).any()
    assert (norm != byte).any()
    assert parity.metrics["acc,none"] != parity.metrics["acc_norm,none"]


# --- chunked log-probs vs a full log_softmax ----------------------------------------------------


def _reference(hidden, weight, targets, bias, softcap):
    logits = torch.nn.functional.linear(hidden, weight, bias).float()
    if softcap:
        logits = torch.tanh(logits / softcap) * softcap
    return torch.log_softmax(logits, dim=-1)[torch.arange(len(targets)), targets]


# Tolerance: atol 1e-5 plus rtol 1e-6 (about 8 fp32 ulps, which matters at scale 30 where the
# log-probs are in the hundreds: one ulp at 256 is 3e-5). bf16 inputs get the same tolerance: the
# same bf16 logits enter both sides (the LM-head matmul rounds each logit to bf16 once, chunked or
# not, since chunks split the vocabulary and not the reduction over d); all that follows is fp32,
# so only the fp32 summation order differs.
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 1e-5)])
@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("softcap", [None, 5.0])
@pytest.mark.parametrize("scale", [1.0, 30.0])  # 30: logits in the hundreds (no overflow)
def test_chunked_logprobs_match_log_softmax(dtype, tol, with_bias, softcap, scale):
    g = torch.Generator().manual_seed(1)
    n, d, vocab, chunk = 23, 16, 301, 37  # 301 = 8 chunks of 37 + a last one of 5
    hidden = (torch.randn(n, d, generator=g) * scale).to(dtype)
    weight = torch.randn(vocab, d, generator=g).to(dtype)
    bias = torch.randn(vocab, generator=g).to(dtype) if with_bias else None
    targets = torch.randint(0, vocab, (n,), generator=g)
    targets[:4] = torch.tensor([0, chunk - 1, chunk, vocab - 1])  # chunk edges
    got = token_logprobs(hidden, weight, targets, bias, softcap, chunk=chunk)
    want = _reference(hidden, weight, targets, bias, softcap)
    assert got.dtype == torch.float32 and got.shape == (n,)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, want, rtol=1e-6, atol=tol)
    # one chunk covering the whole vocabulary gives the same numbers
    torch.testing.assert_close(
        token_logprobs(hidden, weight, targets, bias, softcap, chunk=vocab),
        want,
        rtol=1e-6,
        atol=tol,
    )
