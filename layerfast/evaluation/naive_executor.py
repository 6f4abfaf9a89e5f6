"""Executors: evaluate coalitions (keep-masks) on a fixed list of tokenised requests.

:class:`NaiveExecutor` is the reference: for every batch and every coalition it runs the whole
forward loop of :class:`~layerfast.models.SublayerModel` with the switched-off sublayers skipped
(never computed), then scores only the continuation positions. Batches are fixed once (see
:mod:`layerfast.evaluation.batching`; with ``pack=True`` an item's context is shared by its
choices), so every
coalition sees the same batch composition: the fast executor is tested bit-for-bit against this one.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from ..models import SublayerModel
from ..tasks.requests import Request
from .batching import Batch, batch_rows, make_batches
from .logprobs import DEFAULT_VOCAB_CHUNK, token_logprobs
from .sizing import CPU_BATCH_TOKENS

# on_batch(batch index, rows of the masks computed int [k], values float64 [k, R_b])
OnBatch = Callable[[int, np.ndarray, np.ndarray], None]
# on_row(batch index, row of the masks, values float64 [R_b]): one coalition of a batch done
OnRow = Callable[[int, int, np.ndarray], None]


class NaiveExecutor:
    """Runs every coalition from the embeddings to the LM head, batch by batch.

    batch_tokens: padded tokens per forward batch, an int (``lf.Game`` resolves "auto" with
    :mod:`layerfast.evaluation.sizing`).
    """

    name = "naive"

    def __init__(
        self,
        model: SublayerModel,
        requests: list[Request],
        batch_tokens: int = CPU_BATCH_TOKENS,
        vocab_chunk: int = DEFAULT_VOCAB_CHUNK,
        pack: bool = False,
    ):
        self.model = model
        self.requests = requests
        self.batch_tokens = int(batch_tokens)
        # Why packing is off (None when it is on or exact): "pack=False" or the model's reason.
        self.packing_note = packing_supported(model, requests) if pack else "pack=False"
        self.pack = self.packing_note is None
        tok = model.tokenizer
        pad_id = getattr(tok, "pad_token_id", None)
        if pad_id is None:
            pad_id = getattr(tok, "eos_token_id", None) or 0
        self.batches = make_batches(
            batch_rows(requests, self.pack, batch_tokens),
            batch_tokens,
            pad_id,
            mask_style=model.adapter.attention_implementation,
            dtype=model.dtype,
        )
        self.vocab_chunk = vocab_chunk
        # Machine-independent cost counts: sublayer runs (one per batch), and the same weighted
        # by the batch's real tokens.
        self.sublayer_evaluations = 0
        self.token_sublayer_evaluations = 0

    def _prepare(self, batch: Batch):
        return self.model.prepare(batch.input_ids, batch.attention_mask, batch.position_ids)

    def loglik(self, keep: np.ndarray) -> np.ndarray:
        """Summed continuation log-prob per request, float64 [n_requests], for one keep-mask."""
        return self.loglik_many(np.asarray(keep, dtype=bool)[None])[0]

    @torch.inference_mode()
    def loglik_many(
        self,
        masks: np.ndarray,
        tick: Callable[[int], None] | None = None,
        need: np.ndarray | None = None,
        on_batch: OnBatch | None = None,
        on_row: OnRow | None = None,
    ) -> np.ndarray:
        """float64 [m, n_requests] for bool masks [m, n_players], batch by batch (the outer loop),
        every coalition that needs the batch within it.

        need: bool [m, n_batches], which (coalition, batch) pairs to compute (default: all);
            the requests of pairs not computed are NaN in the result.
        on_row: called as soon as one coalition of a batch is scored, with ``(b, row, values)``:
            ``row`` the index into ``masks``, ``values`` float64 [len(batches[b].request_index)]
            (the requests in the batch's ``request_index`` order).
        on_batch: called after each batch ``b`` with ``(b, rows, values)``: ``rows`` int [k] the
            masks computed, ``values`` float64 [k, len(batches[b].request_index)].
        tick: ``tick(k)`` reports progress in coalition-batches.
        """
        masks = np.asarray(masks, dtype=bool).reshape(-1, self.model.n_players)
        if need is None:
            need = np.ones((len(masks), len(self.batches)), dtype=bool)
        out = np.full((len(masks), len(self.requests)), np.nan, dtype=np.float64)
        for b, batch in enumerate(self.batches):
            rows = np.flatnonzero(need[:, b])
            if not len(rows):
                continue
            done = None
            if on_row is not None:

                def done(k: int, values: np.ndarray, b=b, rows=rows) -> None:
                    on_row(b, int(rows[k]), values)

            values = self.batch_loglik(batch, masks[rows], tick, done)  # [k, R_b]
            out[np.ix_(rows, batch.request_index)] = values
            if on_batch is not None:
                on_batch(b, rows, values)
        return out

    @torch.inference_mode()
    def batch_loglik(
        self,
        batch: Batch,
        masks: np.ndarray,
        tick: Callable[[int], None] | None = None,
        done: Callable[[int, np.ndarray], None] | None = None,
    ) -> np.ndarray:
        """float64 [m, len(batch.request_index)]: one batch for bool masks [m, n_players], each
        coalition run from the embeddings to the LM head; ``done(i, values)`` as coalition i is
        scored."""
        inputs = self._prepare(batch)
        out = np.zeros((len(masks), len(batch.request_index)), dtype=np.float64)
        for i, mask in enumerate(masks):
            kept = self.model.keep_mask(mask)
            state = self.model.initial_state(inputs)
            for j in range(self.model.n_players):
                state = self.model.step(j, state, inputs, kept[j])
            self.sublayer_evaluations += sum(kept)
            self.token_sublayer_evaluations += sum(kept) * batch.n_tokens
            out[i] = self.score(state, batch)
            if done is not None:
                done(i, out[i])
            if tick is not None:
                tick(1)
        return out

    def final_hidden(self, state, batch: Batch, distinct: bool = False) -> torch.Tensor:
        """The final-normed hidden states [N, d] at the batch's scored positions (with
        ``distinct``, [U, d] at its distinct ones, ``batch.scored_rows``), on the last block's
        device."""
        h = self.model.residual(state)  # [B, T, d]
        rows, positions = (
            (batch.scored_rows, batch.scored_positions)
            if distinct
            else (batch.rows, batch.positions)
        )
        picked = h[rows.to(h.device), positions.to(h.device)]  # [N or U, d]
        return self.model.adapter.final_norm()(picked)

    def score(self, state, batch: Batch) -> np.ndarray:
        """Summed log-prob per request of the batch (``batch.request_index`` order) from the
        residual state after the last sublayer. The LM head runs once per distinct scored
        position (``batch.scored_rows``), whatever the number of targets read there."""
        hidden = self.final_hidden(state, batch, distinct=True)  # [U, d]
        with self.model.head_weights() as (weight, bias):  # offloaded weights loaded meanwhile
            device = weight.device
            lp = token_logprobs(
                hidden.to(device),
                weight,
                batch.targets.to(device),
                bias,
                self.model.adapter.logit_softcap,
                self.vocab_chunk,
                index=batch.scored_index.to(device),
            )
        sums = torch.zeros(len(batch.request_index), dtype=torch.float64, device=device)
        sums.index_add_(0, batch.owner.to(device), lp.double())
        return sums.cpu().numpy()


def packing_supported(model: SublayerModel, requests: list[Request]) -> str | None:
    """None when shared-context packing is exact for this model, else the reason it is not."""
    impl = model.adapter.attention_implementation
    if impl not in ("sdpa", "eager"):
        return f"attention implementation {impl!r} takes no custom 4D mask"
    window = model.adapter.sliding_window
    longest = max((len(r.input_ids) for r in requests), default=0)
    if window and longest >= window:
        return f"sliding-window attention ({window}) would need its own packed mask"
    return None
