"""Request length limit: the model's own, as lm-evaluation-harness resolves it; an option; a
warning counting truncated requests; recorded in ``Game.truncation`` and the cache key."""

from __future__ import annotations

import re
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import layerfast as lf
from layerfast.errors import LayerfastWarning, UsageError
from layerfast.tasks import Item, Task
from layerfast.tasks.requests import DEFAULT_MAX_LENGTH, model_max_length
from tests.helpers.tiny_models import tiny_model
from tests.helpers.tiny_tokenizer import tiny_tokenizer

LONG = "the cat sat on the mat " * 20  # 181 tokens of the tiny tokenizer
TASK = Task(
    "long",
    [
        Item(LONG + "and the dog sat on the", ("log", "mat"), 0, "long"),
        Item("the cat sat on the", ("mat", "dog"), 0, "short"),
    ],
)
INFINITY = 1000000000000000019884624838656  # transformers' "no limit" model_max_length

CONFIGS = {
    "n_positions": (SimpleNamespace(n_positions=64, n_ctx=32), None, 64),
    "max_position_embeddings": (SimpleNamespace(max_position_embeddings=128), None, 128),
    "n_ctx": (SimpleNamespace(n_ctx=96), None, 96),
    "None is not set": (SimpleNamespace(n_positions=None, n_ctx=40), None, 40),
    "text_config": (
        SimpleNamespace(text_config=SimpleNamespace(max_position_embeddings=512), n_ctx=1200),
        None,
        512,
    ),
    "tokenizer": (SimpleNamespace(), SimpleNamespace(model_max_length=300), 300),
    "tokenizer unlimited": (SimpleNamespace(), SimpleNamespace(model_max_length=INFINITY), 2048),
    "nothing": (SimpleNamespace(), None, DEFAULT_MAX_LENGTH),
}


@pytest.mark.parametrize("case", sorted(CONFIGS))
def test_model_max_length_as_the_harness_resolves_it(case):
    config, tokenizer, want = CONFIGS[case]
    limit, source = model_max_length(config, tokenizer)
    assert limit == want and isinstance(source, str)
    harness = pytest.importorskip("lm_eval.models.utils")
    if hasattr(harness, "resolve_max_length"):
        assert harness.resolve_max_length(config, tokenizer, default=2048) == want


def gpt2_model():
    tok = tiny_tokenizer()
    model = lf.load(tiny_model("gpt2", vocab_size=len(tok)), tokenizer=tok)
    assert model.config.n_positions == 64
    return model


def test_short_position_limit_truncates_instead_of_crashing():
    """A GPT-2-style model with 64 learned positions: a 190-token request used to be cut at 2048
    tokens only and crashed with an IndexError; now it is cut to the model's 64 with a warning,
    and scored as the plain HF forward scores the truncated input."""
    model = gpt2_model()
    with pytest.warns(
        LayerfastWarning, match=r"2 of 4 requests .* max_length=64 .*limit, config.n_positions"
    ):
        game = lf.Game(model, TASK, utility="logprob", progress=False)
    assert game.truncation == {
        "max_length": 64,
        "limit_source": "config.n_positions",
        "n_truncated": 2,
        "n_requests": 4,
    }
    assert max(len(r.input_ids) for r in game.requests) == 64
    ll = game.loglik(np.ones(model.n_players, bool))[0]
    assert np.isfinite(ll).all()
    with torch.no_grad():
        for r, got in zip(game.requests, ll):
            logits = model.hf_model(torch.tensor([r.input_ids])).logits[0]
            logp = torch.log_softmax(logits.double(), dim=-1)
            pos = torch.arange(len(r.input_ids) - len(r.targets), len(r.input_ids))
            assert got == pytest.approx(logp[pos, torch.tensor(r.targets)].sum().item(), abs=1e-5)


def test_long_context_is_truncated_with_one_warning(tiny_llama):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        game = lf.Game(tiny_llama, TASK, max_length=20, progress=False)
    messages = [str(w.message) for w in caught if issubclass(w.category, LayerfastWarning)]
    assert len(messages) == 1 and "2 of 4 requests" in messages[0], messages
    assert "max_length=20" in messages[0] and "--max-length" in messages[0]
    assert game.truncation["n_truncated"] == 2 and game.truncation["max_length"] == 20
    assert game.truncation["limit_source"] == "max_length="
    long_reqs = [r for r in game.requests if r.group == 0]
    assert all(len(r.input_ids) == 20 and r.n_dropped > 0 for r in long_reqs)
    full = TASK.requests(tiny_llama.tokenizer, 10_000)
    for cut, whole in zip(long_reqs, full):  # the last 21 tokens of context + continuation
        assert cut.input_ids == whole.input_ids[-20:] and cut.targets == whole.targets


def test_no_warning_when_nothing_is_truncated(tiny_llama, tiny_task):
    with warnings.catch_warnings():
        warnings.simplefilter("error", LayerfastWarning)
        game = lf.Game(tiny_llama, tiny_task, progress=False)
    assert game.truncation["n_truncated"] == 0
    assert game.truncation["max_length"] == tiny_llama.config.max_position_embeddings


def test_max_length_past_the_models_limit_warns(tiny_llama):
    limit = tiny_llama.config.max_position_embeddings
    with pytest.warns(LayerfastWarning, match=f"past the model's limit of {limit}"):
        game = lf.Game(tiny_llama, TASK, max_length=4096, progress=False)
    assert game.truncation["n_truncated"] == 0


@pytest.mark.parametrize("bad", [0, -5, 2.5, True])
def test_max_length_and_batch_tokens_must_be_positive_integers(tiny_llama, tiny_task, bad):
    with pytest.raises(UsageError, match="max_length"):
        lf.Game(tiny_llama, tiny_task, max_length=bad, progress=False)
    with pytest.raises(UsageError, match="batch_tokens"):
        lf.Game(tiny_llama, tiny_task, batch_tokens=bad, progress=False)


def test_max_length_is_in_the_cache_key_and_blocks_reuse(tiny_llama, tmp_path):
    path = tmp_path / "c.sqlite"
    mask = np.ones(tiny_llama.n_players, bool)
    games = {}
    for length in (20, 24, None):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", LayerfastWarning)
            games[length] = lf.Game(tiny_llama, TASK, max_length=length, cache=path, progress=False)
        games[length].loglik(mask)
        assert games[length].n_forward == 1, length  # nothing reused across max lengths
    assert len({g.cache_key for g in games.values()}) == 3
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LayerfastWarning)
        again = lf.Game(tiny_llama, TASK, max_length=20, cache=path, progress=False)
    np.testing.assert_array_equal(again.loglik(mask), games[20].loglik(mask))
    assert again.n_forward == 0


def test_cli_max_length_reaches_the_game(
    monkeypatch, tmp_path, model_factory, tiny_tokenizer_fixture, capsys
):
    """``--max-length`` is a flag of every Game verb and reaches the Game ``ablate`` builds."""
    from layerfast import cli
    from layerfast.cli.parser import build_parser
    from tests.cli.test_cli import save_tiny_model, write_task_file

    parser = build_parser()
    for verb in ("ablate", "shapley", "report", "prune", "eavss"):
        assert parser.parse_args([verb, "--max-length", "32"]).max_length == 32
        assert parser.parse_args([verb]).max_length is None
    games = []
    init = lf.Game.__init__

    def record(self, *args, **kwargs):
        init(self, *args, **kwargs)
        games.append(self)

    monkeypatch.setattr(lf.Game, "__init__", record)
    model = save_tiny_model(tmp_path / "m", model_factory, tiny_tokenizer_fixture)
    task = write_task_file(tmp_path / "t.jsonl")
    argv = ["ablate", "--model", model, "--task", task, "--out", tmp_path / "out"]
    rc = cli.main([str(a) for a in [*argv, "--no-progress", "--max-length", "8"]])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert re.search(r"warning: \d+ of 18 requests .* longer than max_length=8 tokens and", err)
    assert games[0].truncation["max_length"] == 8 and games[0].truncation["n_truncated"] > 0


def test_a_max_length_below_one_token_is_named_not_read_as_an_empty_choice(tiny_llama):
    """``task.requests(tok, 0)`` says the limit is wrong; only a choice that really encodes to no
    tokens is reported as one (both are ValueErrors, so the item loop once mistook the first
    for the second)."""
    from layerfast.errors import UsageError
    from layerfast.tasks import Item, Task
    from layerfast.tasks.requests import EmptyContinuation

    with pytest.raises(UsageError, match="max_length must be >= 1 token, got 0"):
        TASK.requests(tiny_llama.tokenizer, 0)
    empty = Task("empty", [Item("Q:", ("a", ""), 0, "q1")], delimiter="")
    with pytest.raises(EmptyContinuation, match="item 'q1' choice 1 .* encodes to no tokens"):
        empty.requests(tiny_llama.tokenizer, 64)
