"""The seed paper's way of scoring coalitions, as its scripts and lm-evaluation-harness run it.

The plain Hugging Face forward, with a forward hook on every branch module that multiplies its
output by zero when the sublayer is "removed" (so it is still computed), logits over the whole
vocabulary at every position, a full log-softmax in fp32, then the continuation's log-probs
summed. Same interface and cost counters as the executors
(:class:`~layerfast.evaluation.naive_executor.NaiveExecutor`), so the three paths are timed alike.
"""

from __future__ import annotations

import numpy as np
import torch

from ..evaluation.batching import build_rows, make_batches
from ..models import SublayerModel
from ..tasks.requests import Request


class SeedWayScorer:
    """Zeroing hooks + full-vocabulary log-softmax per request."""

    name = "seed"

    def __init__(self, model: SublayerModel, requests: list[Request], batch_tokens: int):
        self.model = model
        self.hf = model.hf_model
        self.requests = requests
        self.batches = make_batches(build_rows(requests, pack=False), batch_tokens, 0)
        self.sublayer_evaluations = 0
        self.token_sublayer_evaluations = 0
        self.removed: set[int] = set()  # player indices whose branch output is zeroed
        self._handles = []
        for block, layer in enumerate(model.blocks):
            modules = model.adapter.branch_modules(layer)  # (attention, MLP)
            for player, module in zip(model.players_of(block), modules):
                self._handles.append(module.register_forward_hook(self._hook(player)))

    def _hook(self, player: int):
        def hook(module, args, output):
            if player not in self.removed:
                return output
            if isinstance(output, tuple):
                return (output[0] * 0, *output[1:])
            return output * 0

        return hook

    def close(self) -> None:
        """Remove the hooks (the model is shared with the other paths)."""
        for handle in self._handles:
            handle.remove()
        self._handles = []

    @torch.inference_mode()
    def loglik_many(self, masks: np.ndarray) -> np.ndarray:
        """Summed continuation log-likelihoods, float64 [len(masks), n_requests]."""
        device = self.model.device
        out = np.zeros((len(masks), len(self.requests)))
        for m, mask in enumerate(np.asarray(masks, dtype=bool)):
            self.removed = set(np.flatnonzero(~mask).tolist())
            for batch in self.batches:
                logits = self.hf(
                    input_ids=batch.input_ids.to(device),
                    attention_mask=batch.attention_mask.to(device),
                    use_cache=False,
                ).logits  # [B, T, V]
                logprobs = torch.log_softmax(logits.float(), dim=-1)  # [B, T, V]
                picked = logprobs[
                    batch.rows.to(device), batch.positions.to(device), batch.targets.to(device)
                ]  # [n_targets]
                sums = torch.zeros(len(batch.request_index), dtype=torch.float64, device=device)
                sums.index_add_(0, batch.owner.to(device), picked.double())
                out[m, batch.request_index] = sums.cpu().numpy()
                del logits, logprobs
                self.sublayer_evaluations += len(mask)  # every sublayer runs, removed or not
                self.token_sublayer_evaluations += len(mask) * batch.n_tokens
        self.removed = set()
        return out
