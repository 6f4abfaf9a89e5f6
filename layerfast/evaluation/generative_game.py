"""The generative Game: v(S) from what coalition S *generates* (greedy), not from likelihoods.

    game = lf.Game(model, lf.tasks.load("analogies-gen"), utility="exact_match")
    u = game(masks)   # bool [m, n_players] -> float64 [m]

(``lf.Game`` hands a generative task to this class.) Per coalition and prompt it holds the
generated token ids; utilities are the task scorer's reading of their texts, so a new metric on
the same outputs decodes nothing, and the ids go to the cache (``cache=``) as each coalition is
finished, so a rerun or a resume after a kill decodes nothing either.

How outputs are shared across coalitions (:mod:`.verify`): the full model's outputs are decoded
once (the references). Every other coalition gets one teacher-forced pass over prompt +
reference (through the prefix executor, coalitions sharing their common prefixes); where its
greedy tokens never differ from the reference before the stop, its output *is* the reference.
Otherwise it decodes on from the first difference with its own KV cache, starting from the keys
and values the verifying pass left (no second pass over the prompt), drafting from the reference
and the outputs of coalitions already finished (:mod:`layerfast.models.generation`,
:mod:`.outputs`). ``decoded_tokens`` (decoding steps times prompts), ``accepted`` (draft tokens
taken), ``verified`` and ``near_ties`` count what happened.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..coalitions import as_masks, coalition_keys, masks_from_keys
from ..errors import UsageError
from ..models.drafting import MAX_DRAFT, drafting_supported
from ..models.generation import generate_ids
from ..progress import progress as progress_bar
from ..tasks.prompts import generated_text, prompts_fingerprint, tokenise_prompts
from .cache import CacheKey, open_cache
from .executors import check_executor
from .outputs import candidate, drafts_for, flatten, unflatten
from .players import choose_players
from .prefix_executor import trie_order
from .sizing import AUTO, check_size, resolve_sizes
from .verify import make_verifier, unpack, verification_requests

KV_BUDGET = 1 << 30  # bytes of keys and values kept for decoding to resume from, at most
LAYOUT = "generated-greedy"  # the cache key's layout: rows hold token ids, not log-likelihoods


class GenerativeGame:
    """v(S) on a generative task (``task.generative``); the arguments are ``lf.Game``'s, plus
    ``gen_batch_size`` (prompts decoded together). ``workers`` > 1 is refused for now."""

    def __init__(
        self,
        model: Any,
        task: Any,
        utility: str | None = None,
        executor: str = "prefix",
        cache: bool | str | Path | None = None,
        batch_tokens: int | str | None = AUTO,
        max_length: int | None = None,
        progress: bool = True,
        chunk: int = 64,
        pack: bool = True,
        memory_budget: int | str | None = AUTO,
        stack_tokens: int | str | None = AUTO,
        workers: int | None = None,
        ray_address: str | None = None,
        threads_per_worker: int | None = None,
        gpus_per_worker: float | None = None,
        players: Sequence[str] | str | None = None,
        unit: str = "sublayer",
        gen_batch_size: int = 32,
    ):
        if not hasattr(model, "keep_mask") or not hasattr(model, "prepare"):
            raise TypeError(
                f"model must be a SublayerModel (use lf.load), got {type(model).__name__}"
            )
        check_executor(executor)
        if workers not in (None, 1):
            raise UsageError(
                f"workers={workers}: generative tasks run in this process for now; drop "
                "--workers (the cache still resumes a killed sweep)"
            )
        if chunk < 1:
            raise UsageError(f"chunk must be >= 1, got {chunk}")
        self.player_set = choose_players(model, players, unit)
        self.model, self.task = model, task
        self.prompts, self.truncation = tokenise_prompts(
            task, model.tokenizer, model.config, max_length
        )
        self.scorer = task.scorer(self.prompts)
        self.utility = self.scorer.check(utility)
        self.players = list(self.player_set.names)
        self.n_players = len(self.players)
        self.progress, self.chunk, self.gen_batch_size = progress, int(chunk), int(gen_batch_size)
        self.executor_name = executor
        check_size("stack_tokens", stack_tokens, 0)  # accepted for Game's signature; not stacked
        tokens, budget, how = resolve_sizes(model, batch_tokens, memory_budget, self._longest())
        self.sizing = {"batch_tokens": tokens, "memory_budget": budget, "how": how}
        self.packing_note = "generation: one row per prompt"
        self.workers = None
        self._memo: dict[str, list[list[int]]] = {}
        self._cache = open_cache(cache)
        self._verifier = None
        self._kv_bytes = 0  # bytes of keys and values kept for decoding to resume from
        self._layer_index = [  # the index each block's attention module keys its cache by
            getattr(model.adapter.branch_modules(layer)[0], "layer_idx", i)
            for i, layer in enumerate(model.blocks)
        ]
        self.n_forward = 0  # coalitions this game computed (not served from memory or cache)
        self.decoded_tokens = 0  # tokens produced by decoding steps (references included)
        self.verified = 0  # (coalition, prompt) outputs taken from a reference, nothing decoded
        self.near_ties = 0  # greedy choices within the dtype's rounding of the runner-up
        self.accepted = 0  # draft tokens taken while decoding (decoding steps saved)
        self._compute = 0  # token-sublayer evaluations of the decoding passes

    # --- identity ------------------------------------------------------------------------------
    def _longest(self) -> int:
        return max((len(p.input_ids) + p.max_new_tokens for p in self.prompts), default=1)

    @property
    def key(self) -> CacheKey:
        if "_key" not in self.__dict__:
            model = self.model
            self.__dict__["_key"] = CacheKey(
                model=model.fingerprint(),
                task=self.task.fingerprint(),
                requests=hashlib.sha256(prompts_fingerprint(self.prompts)).hexdigest()[:16],
                layout=LAYOUT,
                max_length=int(self.truncation["max_length"]),
                batch_tokens=int(self.sizing["batch_tokens"]),
                vocab_chunk=0,
                dtype=str(model.dtype).replace("torch.", ""),
                attention=model.adapter.attention_implementation,
                device=model.device.type,
            )
        return self.__dict__["_key"]

    @property
    def cache_key(self) -> tuple[str, str, str]:
        return self.key.columns()

    @property
    def chance(self) -> float | None:
        return self.scorer.chance(self.utility)

    @property
    def n_items(self) -> int:
        return len(self.task)

    @property
    def compute_run(self) -> int:
        verifier = 0 if self._verifier is None else self._verifier.token_sublayer_evaluations
        return int(self._compute + verifier)

    @property
    def draws_progress(self) -> bool:
        return bool(self.progress)

    @property
    def pool(self) -> None:
        return None

    def close(self) -> None:
        pass

    def __enter__(self) -> GenerativeGame:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def with_utility(self, utility: str) -> GenerativeGame:
        """The same game (sharing its outputs and cache) scored by another utility."""
        other = object.__new__(GenerativeGame)
        other.__dict__.update(self.__dict__)
        other.utility = self.scorer.check(utility)
        return other

    def full_mask(self) -> np.ndarray:
        return np.ones(self.n_players, dtype=bool)

    # --- outputs ---------------------------------------------------------------------------------
    def check_masks(self, masks) -> np.ndarray:
        return as_masks(masks, self.n_players, players=self.players)

    def outputs(self, masks) -> list[list[list[int]]]:
        """Generated token ids per coalition and prompt, for bool masks [m, n_players]."""
        arr = self.player_set.expand(self.check_masks(masks))
        keys = coalition_keys(arr)
        self._fetch(list(dict.fromkeys(keys)))
        return [self._memo[k] for k in keys]

    def texts(self, mask) -> list[str]:
        """The scored texts (decoded, cut at the stops) of one coalition, one per prompt."""
        tok = self.model.tokenizer
        (out,) = self.outputs(np.asarray(mask, dtype=bool)[None])
        return [generated_text(tok, t, p.until) for t, p in zip(out, self.prompts, strict=True)]

    def _fetch(self, keys: list[str]) -> None:
        missing = [k for k in keys if k not in self._memo]
        if missing and self._cache is not None:
            for k, row in self._cache.get(self.key, missing).items():
                tokens = unflatten(row, len(self.prompts))
                if tokens is not None:
                    self._memo[k] = tokens
            missing = [k for k in missing if k not in self._memo]
        if not missing:
            return
        full = coalition_keys(np.ones((1, self.model.n_players), dtype=bool))[0]
        if full not in self._memo:
            self._fetch_reference(full)
        missing = [k for k in missing if k not in self._memo]
        if missing:
            self._verify_and_decode(missing)

    def _fetch_reference(self, full: str) -> None:
        if self._cache is not None:
            row = self._cache.get(self.key, [full]).get(full)
            tokens = None if row is None else unflatten(row, len(self.prompts))
            if tokens is not None:
                self._memo[full] = tokens
                return
        self._finish(full, self._decode(self.model.keep_mask(None), None))

    def _decode(self, kept, prefix) -> list[list[int]]:
        p = self.prompts
        gen = generate_ids(
            self.model, [q.input_ids for q in p], kept, [q.max_new_tokens for q in p],
            [q.until for q in p], self.gen_batch_size, prefix,
        )  # fmt: skip
        self.decoded_tokens += gen.decoded
        self.near_ties += sum(gen.near_ties)
        self._compute += gen.token_sublayers
        return gen.tokens

    def _finish(self, key: str, tokens: list[list[int]]) -> None:
        self._memo[key] = tokens
        self.n_forward += 1
        if self._cache is not None:
            self._cache.put_many(self.key, [(key, flatten(tokens))])

    def _verify_and_decode(self, keys: list[str]) -> None:
        """Verify coalitions ``keys`` against the references in chunks of ``chunk`` in trie
        order (the prefix executor shares their common prefixes); each coalition is completed
        as soon as its last batch is verified, decoding resuming from the keys and values the
        verifying pass left (:meth:`_keep_kv`)."""
        full = coalition_keys(np.ones((1, self.model.n_players), dtype=bool))[0]
        reference = self._memo[full]
        if self._verifier is None:
            options = {k: self.sizing[k] for k in ("batch_tokens", "memory_budget")}
            requests = verification_requests(self.prompts, reference)
            self._verifier = make_verifier(self.executor_name, self.model, requests, options)
        verifier = self._verifier
        masks = masks_from_keys(keys, self.model.n_players)
        need = np.ones((len(keys), len(verifier.batches)), dtype=bool)
        rows = np.zeros((len(keys), len(self.prompts)), dtype=np.float64)
        past: dict[int, dict[int, dict]] = {}  # coalition -> prompt -> {layer: (keys, values)}
        bar = _progress(len(keys), self.progress and len(keys) > 1)
        order = trie_order(masks)
        try:
            for start in range(0, len(order), self.chunk):
                part = order[start : start + self.chunk]

                def on_row(b: int, row: int, values: np.ndarray, part=part) -> None:
                    i = int(part[row])
                    batch = verifier.batches[b]
                    rows[i, batch.request_index] = values
                    need[i, b] = False
                    self._keep_kv(past.setdefault(i, {}), masks[i], batch, values, reference)
                    if not need[i].any():
                        self._complete(keys[i], masks[i], rows[i], reference, past.pop(i))
                        if bar is not None:
                            bar.update(1)

                verifier.loglik_many(masks[part], need=need[part], on_row=on_row)
        finally:
            if bar is not None:
                bar.close()

    def _keep_kv(self, kept: dict, mask, batch, values: np.ndarray, reference) -> None:
        """The keys and values, [H, S, dh] per kept attention sublayer, of prompt + the agreed
        part of the reference, for each prompt of ``batch`` that left its reference (verifier
        rows are unpacked: row q holds request ``batch.request_index[q]`` from column 0)."""
        recorded = self._verifier.last_kv
        layers = [
            self._layer_index[p.block]
            for p, on in zip(self.model.players, mask)
            if on and p.kind == "attn"
        ]
        first = unpack(values)[0]
        for q, r in enumerate(batch.request_index):
            if first[q] >= len(reference[r]) or self._kv_bytes > KV_BUDGET:
                continue
            n = len(self.prompts[r].input_ids) + int(first[q])
            entry = {
                l: (recorded[l][0][q, :, :n].clone(), recorded[l][1][q, :, :n].clone())
                for l in layers
            }
            self._kv_bytes += sum(k.numel() * k.element_size() * 2 for k, _ in entry.values())
            kept[int(r)] = entry

    def _complete(self, key: str, mask: np.ndarray, packed, reference, past=None) -> None:
        """A verified coalition: the reference output where it agrees throughout; elsewhere it
        knows its output up to and including its own token at the first difference. Such a
        prompt is verified once more against another coalition's output that starts with what
        it knows (a trie neighbour's, when there is one), then decodes on from what it knows."""
        past = {} if past is None else past
        first, ties, own = unpack(packed)
        self.near_ties += int(ties.sum())
        out = [list(ref) for ref in reference]
        known = {
            i: list(ref[: first[i]]) + [int(own[i])]
            for i, ref in enumerate(reference)
            if first[i] < len(ref)
        }
        self.verified += len(reference) - len(known)
        drafting = drafting_supported(self.model, self._longest() * (1 + MAX_DRAFT))
        # with drafting, a neighbour's output is checked inside the first decoding pass
        candidates = (
            {} if drafting else {i: candidate(self._memo.values(), i, k) for i, k in known.items()}
        )
        second = [i for i in known if candidates.get(i) is not None]
        if second:
            options = {k: self.sizing[k] for k in ("batch_tokens", "memory_budget")}
            requests = verification_requests(
                [self.prompts[i] for i in second], [candidates[i] for i in second]
            )
            verifier = make_verifier("naive", self.model, requests, options)
            values = verifier.loglik_many(mask[None])[0]
            self._compute += verifier.token_sublayer_evaluations
            first2, ties2, own2 = unpack(values)
            self.near_ties += int(ties2.sum())
            for j, i in enumerate(second):
                cand = candidates[i]
                if first2[j] >= len(cand):
                    out[i] = list(cand)
                    del known[i]
                    self.verified += 1
                else:
                    known[i] = list(cand[: first2[j]]) + [int(own2[j])]
                    past.pop(i, None)  # it no longer ends where the first verification left it
        if known:
            todo = list(known)
            p = [self.prompts[i] for i in todo]
            gen = generate_ids(
                self.model, [q.input_ids for q in p], mask, [q.max_new_tokens for q in p],
                [q.until for q in p], self.gen_batch_size, [known[i] for i in todo],
                drafts=[drafts_for(self._memo.values(), i, reference[i], known[i]) for i in todo],
                past=[past.get(i) for i in todo],
            )  # fmt: skip
            self._kv_bytes -= sum(
                k.numel() * k.element_size() * 2 for e in past.values() for k, _ in e.values()
            )
            self.accepted += gen.accepted
            self.decoded_tokens += gen.decoded
            self.near_ties += sum(gen.near_ties)
            self._compute += gen.token_sublayers
            for i, tokens in zip(todo, gen.tokens, strict=True):
                out[i] = tokens
        self._finish(key, out)

    # --- utilities -------------------------------------------------------------------------------
    def item_values(self, masks, utility: str | None = None) -> np.ndarray:
        """Per-item terms float64 [m, n_items] of many coalitions."""
        utility = self.scorer.check(utility or self.utility)
        tok = self.model.tokenizer
        rows = []
        for out in self.outputs(masks):
            texts = [generated_text(tok, t, p.until) for t, p in zip(out, self.prompts)]
            rows.append(self.scorer.per_item(texts, utility))
        return np.stack(rows) if rows else np.zeros((0, self.n_items))

    def per_item(self, mask, utility: str | None = None) -> np.ndarray:
        return self.item_values(np.asarray(mask, dtype=bool)[None], utility)[0]

    def __call__(self, masks) -> np.ndarray:
        """Utilities float64 [m] for bool masks [m, n_players] (True = kept)."""
        values = self.item_values(masks)
        return values.mean(axis=1) if values.shape[1] else np.zeros(len(values))

    def __repr__(self) -> str:
        return (
            f"GenerativeGame({self.model.name!r}, task={self.task.name!r} ({len(self.task)} "
            f"items), utility={self.utility!r}, executor={self.executor_name!r})"
        )


def _progress(total: int, show: bool):
    if not show:
        return None
    return progress_bar(total=total, desc="generating", unit="coalition")
