"""``LayerfastLM``: a model of lm-evaluation-harness that runs one coalition of sublayers.

The harness hands over (context, continuation) strings; they are tokenised by the harness's own
rules (:func:`~layerfast.tasks.requests.encode_pair`, left truncation to ``max_length``),
requests with the same context tokens are packed into one row (the context computed once), and
the removed sublayers are skipped, never computed, by the prefix executor; the final norm and LM
head run only at continuation positions, in vocabulary chunks. Each request gets ``(summed
log-likelihood, is_greedy)``, where ``is_greedy`` says that every continuation token is the
argmax of the logits at its position (:func:`~layerfast.evaluation.logprobs.token_logprobs_greedy`).
``loglikelihood_rolling`` follows the harness's rolling windows (``get_rolling_token_windows`` +
``make_disjoint_window``, as HFLM). ``generate_until`` decodes greedily with the removed sublayers
skipped (a KV cache of the attention sublayers that run), reading ``until`` and ``max_gen_toks``
as HFLM does and refusing sampling options (:mod:`.lm_eval_generate`).

Arguments come from the harness as ``model_args``::

    lm_eval.simple_evaluate(model="layerfast",
                            model_args="pretrained=smollm2-135m,remove=attn3,mlp5,dtype=fp32")

A comma-separated value may continue after a comma (``remove=attn3,mlp5``): a piece without
``=`` belongs to the value before it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from lm_eval.api.model import LM
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

from .. import threads as thread_count
from ..errors import UsageError, warn
from ..evaluation.batching import Batch
from ..evaluation.logprobs import DEFAULT_VOCAB_CHUNK, token_logprobs_greedy
from ..evaluation.prefix_executor import PrefixExecutor
from ..evaluation.sizing import AUTO, check_size, longest_row, resolve_sizes
from ..models.loading import DEFAULT_MODEL
from ..players import parse_removed
from ..progress import progress as progress_bar
from ..tasks.requests import (  # encode: the harness's tok_encode, as encode_pair uses it
    Request,
    encode,
    encode_pair,
    model_max_length,
    prefix_token_id,
    truncate,
)
from .lm_eval_args import as_bool, load_model, parse_model_args
from .lm_eval_args import thread_count as thread_count_arg
from .lm_eval_generate import DEFAULT_MAX_GEN_TOKS, generate_until

# TokenPair: (context token ids, continuation token ids), as the harness's _loglikelihood_tokens
TokenPair = tuple[Sequence[int], Sequence[int]]
# Packing groups per executor: its batches (ids and 4D masks) are built up front, so a harness
# call with many thousand documents is run in slices of this many, bounding that memory.
ITEMS_PER_CALL = 1024


class LayerfastLM(LM):
    """The harness model ``"layerfast"``: ``pretrained`` with the ``remove`` players skipped.

    Args:
        pretrained: a packaged name, a local HF model folder (``lf.load``), a ``transformers``
            model object or a :class:`~layerfast.models.SublayerModel`.
        remove: the players switched off, e.g. ``"attn3,mlp5"`` or ``["attn3", "mlp5"]``;
            None / "" for the full model. A name that is not one of ``model.players`` is a
            UsageError listing the valid names.
        dtype, device, trust_remote_code, revision: as ``lf.load`` (``trust_remote_code``
            stays False unless given; ``revision`` for a model hub id); dtype "auto" means as
            stored.
        tokenizer: a tokenizer folder or object, for a model folder without one.
        batch_tokens: padded tokens per forward batch, or "auto" (as ``lf.Game``).
        max_length: longest request in tokens (left-truncated beyond, as the harness does);
            None: the model's limit resolved as HFLM does.
        threads: torch CPU threads, "auto" (as the CLI) or a count; None leaves them alone.
        pack: share each context across its continuations (off where it would not be exact).
        vocab_chunk: vocabulary rows of the LM head per step.
        progress: a progress bar per call, counting batches.
        batch_size, max_batch_size: the harness's, accepted and unused (batches are sized in
            tokens by ``batch_tokens``).
    """

    def __init__(
        self,
        pretrained: Any = DEFAULT_MODEL,
        remove: str | Sequence[str] | None = None,
        dtype: str | torch.dtype | None = None,
        device: str | torch.device | None = None,
        batch_tokens: int | str | None = AUTO,
        max_length: int | None = None,
        trust_remote_code: bool = False,
        tokenizer: Any = None,
        revision: str | None = None,
        threads: int | str | None = None,
        pack: bool = True,
        vocab_chunk: int = DEFAULT_VOCAB_CHUNK,
        progress: bool = True,
        batch_size: Any = None,
        max_batch_size: Any = None,
        **unknown: Any,
    ):
        super().__init__()
        if unknown:
            raise UsageError(
                f"layerfast model: unknown argument(s) {', '.join(sorted(unknown))}; it takes "
                "pretrained, remove, dtype, device, batch_tokens, max_length, trust_remote_code, "
                "tokenizer, revision, threads, pack, vocab_chunk, progress"
            )
        # every check that needs no model first
        removed = parse_removed(remove)  # the names' form; the players once it has loaded
        if max_length is not None and (
            isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1
        ):
            raise UsageError(f"max_length must be a whole number >= 1, got {max_length!r}")
        self.batch_tokens = check_size("batch_tokens", batch_tokens, 1)  # None: auto per call
        self.vocab_chunk = check_size("vocab_chunk", vocab_chunk, 1) or DEFAULT_VOCAB_CHUNK
        self.pack = as_bool("pack", pack)
        self.progress = as_bool("progress", progress)
        trust = as_bool("trust_remote_code", trust_remote_code)
        n_threads = None if threads is None else thread_count_arg(threads)  # None: auto

        self.model = load_model(pretrained, dtype, device, tokenizer, trust, revision)
        self.removed = parse_removed(removed, self.model.players)
        self.keep = np.ones(self.model.n_players, dtype=bool)
        self.keep[[self.model.players.index(p) for p in self.removed]] = False
        self._max_length = (
            max_length
            if max_length is not None
            else model_max_length(self.model.config, self.model.tokenizer)[0]
        )
        self.packing_note: str | None = None  # the last call's reason packing was off, if it was
        self.near_ties: list[int] = []  # per request of the last generate_until call
        self._device = self.model.device
        if threads is not None:  # "auto": as the CLI chooses them for this model
            auto = resolve_sizes(self.model, self.batch_tokens, 0)[0]
            self.threads = thread_count.apply(n_threads or thread_count.choose(self.model, auto))

    # --- the harness's interface ------------------------------------------------------------------
    @classmethod
    def create_from_arg_string(
        cls, arg_string: str, additional_config: dict | None = None
    ) -> LayerfastLM:
        """From ``"pretrained=...,remove=attn3,mlp5"`` (see the module docstring)."""
        return cls.create_from_arg_obj(parse_model_args(arg_string), additional_config)

    @classmethod
    def create_from_arg_obj(
        cls, arg_dict: dict[str, Any], additional_config: dict | None = None
    ) -> LayerfastLM:
        """From a dict of arguments plus the harness's ``batch_size``, ``max_batch_size`` and
        ``device`` (None values dropped; a device given both ways must agree)."""
        extra = {k: v for k, v in (additional_config or {}).items() if v is not None}
        both = [k for k in extra if k in arg_dict and arg_dict[k] != extra[k]]
        if both:
            raise UsageError(
                f"layerfast model: {', '.join(both)} given twice with different values "
                f"(model_args {[arg_dict[k] for k in both]}, harness {[extra[k] for k in both]})"
            )
        return cls(**{**extra, **arg_dict})

    @property
    def tokenizer(self) -> Any:
        return self.model.tokenizer

    @property
    def max_length(self) -> int:
        return self._max_length

    @property
    def max_gen_toks(self) -> int:
        """New tokens of a generate_until request that sets no ``max_gen_toks`` (HFLM's 256)."""
        return DEFAULT_MAX_GEN_TOKS

    @property
    def eot_token_id(self) -> int | None:
        return getattr(self.tokenizer, "eos_token_id", None)

    @property
    def tokenizer_name(self) -> str:
        return getattr(self.tokenizer, "name_or_path", "").replace("/", "__")

    def get_model_info(self) -> dict[str, Any]:
        """What goes into the harness's ``results["config"]``."""
        return {
            "layerfast": {
                "model": self.model.name,
                "dtype": str(self.model.dtype).replace("torch.", ""),
                "removed": list(self.removed),
                "n_players": self.model.n_players,
                "max_length": self.max_length,
                "batch_tokens": self.batch_tokens or AUTO,
                "packing": "on" if self.packing_note is None else self.packing_note,
            }
        }

    def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        """``[(summed log-likelihood, is_greedy)]`` of ``req.args = (context, continuation)``,
        in request order."""
        tok = self._tokenizer()
        pairs = [
            encode_pair(tok, context, continuation) for context, continuation in _args(requests)
        ]
        return self.loglikelihood_tokens(pairs, disable_tqdm)

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        """Summed log-likelihood of each ``req.args = (text,)``, every token predicted once in
        windows of ``max_length`` tokens (the harness's rolling windows, first conditioned on
        the prefix token: BOS, else EOS)."""
        tok = self._tokenizer()
        prefix = prefix_token_id(tok)
        pairs, owner = [], []
        for i, (text,) in enumerate(_args(requests)):
            windows = get_rolling_token_windows(
                token_list=encode(tok, text),
                prefix_token=prefix,
                max_seq_len=self.max_length,
                context_len=1,
            )
            for context, continuation in map(make_disjoint_window, windows):
                pairs.append((context, continuation))
                owner.append(i)
        totals = [0.0] * len(requests)
        for i, (ll, _greedy) in zip(owner, self.loglikelihood_tokens(pairs, disable_tqdm)):
            totals[i] += ll
        return totals

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        """One greedy generation per ``req.args = (context, gen_kwargs)``, in request order, as
        HFLM's ``generate_until`` (:mod:`.lm_eval_generate`); ``self.near_ties`` then holds,
        per request, the greedy steps whose top-2 logits were within rounding."""
        return generate_until(self, requests, disable_tqdm)

    # --- the work -------------------------------------------------------------------------------
    @torch.inference_mode()
    def loglikelihood_tokens(
        self, pairs: Sequence[TokenPair], disable_tqdm: bool = False
    ) -> list[tuple[float, bool]]:
        """``[(summed log-likelihood, is_greedy)]`` for (context ids, continuation ids) pairs,
        in order: the input is ``(context + continuation)[-(max_length + 1):][:-1]`` as the
        harness feeds it, and an empty continuation scores ``(0.0, True)``."""
        requests, where, n_truncated = self._requests(pairs)
        out = [(0.0, True)] * len(pairs)
        if n_truncated:
            warn(
                f"{n_truncated} of {len(requests)} requests are longer than max_length "
                f"{self.max_length} tokens and were left-truncated, as the harness does"
            )
        bar = progress_bar(
            total=len(requests),
            desc="layerfast",
            unit="request",
            enabled=self.progress and not disable_tqdm and bool(requests),
        )
        for start, stop in _item_slices(requests, ITEMS_PER_CALL):
            lls, greedy = self._run(requests[start:stop], bar)
            for k, i in enumerate(where[start:stop]):
                out[i] = (float(lls[k]), bool(greedy[k]))
        bar.close()
        return out

    def _run(self, requests: list[Request], bar: Any) -> tuple[np.ndarray, np.ndarray]:
        """(summed log-likelihoods float64 [R], is_greedy bool [R]) of the kept coalition."""
        batch_tokens = resolve_sizes(
            self.model, self.batch_tokens, 0, longest_row(requests, self.pack)
        )[0]
        executor = _GreedyExecutor(
            self.model,
            requests,
            batch_tokens=batch_tokens,
            vocab_chunk=self.vocab_chunk,
            pack=self.pack,
        )
        self.packing_note = executor.packing_note

        def on_batch(b: int, rows: np.ndarray, values: np.ndarray) -> None:
            bar.update(len(executor.batches[b].request_index))

        lls = executor.loglik_many(self.keep[None], on_batch=on_batch)[0]
        return lls, executor.greedy

    def _requests(self, pairs: Sequence[TokenPair]) -> tuple[list[Request], list[int], int]:
        """(requests, the pair index of each, how many were truncated). Requests with the same
        context tokens are consecutive and share a packing ``group``, so packing gives them one
        row; a row is cut when it would grow past ``max_length`` tokens. ``unit``: the request's
        place in its group."""
        limit = self.max_length
        groups: dict[tuple[int, ...], list[int]] = {}
        made: dict[int, tuple[tuple[int, ...], tuple[int, ...], int]] = {}
        for i, (context, continuation) in enumerate(pairs):
            if not continuation:
                continue
            made[i] = truncate(context, continuation, limit)  # (input_ids, targets, dropped)
            key = made[i][0][: len(made[i][0]) + 1 - len(made[i][1])]  # the context tokens
            groups.setdefault(key, []).append(i)
        requests, where, group, unit = [], [], -1, 0
        for key, members in groups.items():
            length = limit + 1  # start a new group with the first member
            for i in members:
                input_ids, targets, dropped = made[i]
                grows = len(targets) - 1
                if length + grows > max(limit, len(input_ids)):
                    group, unit, length = group + 1, 0, len(key)
                requests.append(Request(group, unit, input_ids, targets, dropped))
                where.append(i)
                unit, length = unit + 1, length + grows
        return requests, where, sum(r.n_dropped > 0 for r in requests)

    def _tokenizer(self) -> Any:
        if self.tokenizer is None:
            raise UsageError(
                f"model {self.model.name} has no tokenizer: pass tokenizer=<folder> in model_args"
            )
        return self.tokenizer


class _GreedyExecutor(PrefixExecutor):
    """The prefix executor for one coalition, also recording per request whether every target
    token is the argmax at its position (``greedy``, bool [n_requests])."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.greedy = np.ones(len(self.requests), dtype=bool)

    def score(self, state, batch: Batch) -> np.ndarray:
        """:meth:`NaiveExecutor.score` (the same log-probs, bit for bit), plus ``greedy``."""
        hidden = self.final_hidden(state, batch)
        with self.model.head_weights() as (weight, bias):  # offloaded weights loaded meanwhile
            device = weight.device
            lp, top = token_logprobs_greedy(
                hidden.to(device),
                weight,
                batch.targets.to(device),
                bias,
                self.model.adapter.logit_softcap,
                self.vocab_chunk,
            )
        owner = batch.owner.to(device)
        sums = torch.zeros(len(batch.request_index), dtype=torch.float64, device=device)
        sums.index_add_(0, owner, lp.double())
        misses = torch.zeros(len(batch.request_index), dtype=torch.long, device=device)
        misses.index_add_(0, owner, (~top).long())
        self.greedy[batch.request_index] = (misses == 0).cpu().numpy()
        return sums.cpu().numpy()


def _item_slices(requests: list[Request], size: int) -> list[tuple[int, int]]:
    """[start, stop) ranges of ``requests`` holding ``size`` items each (the last fewer); a
    slice never splits an item."""
    bounds, start, seen = [], 0, 0
    for k in range(1, len(requests) + 1):
        if k == len(requests) or requests[k].group != requests[k - 1].group:
            seen += 1
            if seen == size or k == len(requests):
                bounds.append((start, k))
                start, seen = k, 0
    return bounds


def _args(requests) -> list[tuple]:
    return [tuple(getattr(r, "args", r)) for r in requests]
