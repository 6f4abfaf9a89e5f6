"""Perplexity of plain text under a coalition: a thin wrapper over a ``text:`` Game.

``lf.perplexity(model, texts, keep=mask)`` builds a :class:`~layerfast.tasks.text_task.TextTask`
of ``texts`` and evaluates the coalition ``keep`` with the utility ``ppl`` (v = -perplexity), so
it scores exactly what ``--task text:<file> --utility ppl`` scores: each text tokenised on its
own (BOS prepended where the tokenizer has one and does not add it), cut into windows of at most
``max_length`` tokens, every token after the first of a window scored, the log-probs from the
chunked LM head (:mod:`layerfast.evaluation.logprobs`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..models import SublayerModel
from ..tasks.text_task import TextTask
from .game import Game


def perplexity(
    model: SublayerModel,
    texts: Sequence[str],
    keep=None,
    max_length: int = 512,
    batch_size: int = 8,
) -> float:
    """exp(mean negative log-likelihood per scored token) over ``texts``.

    keep: bool [n_players] (True = kept; None: the full model). max_length: tokens per window.
    batch_size: windows per forward batch (``batch_tokens = batch_size * max_length``).
    """
    if isinstance(texts, str):
        raise TypeError("texts must be a sequence of strings, not one string")
    task = TextTask("texts", list(texts), source="lf.perplexity")
    game = Game(
        model,
        task,
        utility="ppl",
        max_length=max_length,
        batch_tokens=int(batch_size) * int(max_length),
        pack=False,
        progress=False,
    )
    mask = np.ones((1, game.n_players), bool) if keep is None else np.asarray(keep)[None]
    return -float(game(mask)[0])
