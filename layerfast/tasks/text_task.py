"""Plain text as a Game task: ``lf.tasks.text("lee")``, ``--task text:lee --utility nll``.

Documents come from :func:`~layerfast.tasks.texts.calibration_texts` (``"lee"``: gensim's Lee
background corpus, 300 news articles; ``"pydoc"``: the standard library's ``pydoc_data.topics``,
79 documents, no download), a ``.jsonl`` file (a ``"text"`` string per line) or any other text
file (one document per line). Blank documents are skipped; ``n`` keeps the first ``n``.

Requests, as :func:`layerfast.evaluation.perplexity.perplexity` scores text: each document is
tokenised on its own (BOS prepended where the tokenizer has one and does not add it), cut into
windows of at most ``max_length`` tokens (the Game's ``max_length``), and every token after the
first of a window is scored: one :class:`~layerfast.tasks.requests.Request` per window
(input = window[:-1], targets = window[1:]), each its own packing ``group`` (so packing never puts
two windows in one row unless their first :data:`~layerfast.evaluation.batching.MIN_SHARED`
tokens agree) and with ``unit`` = the index of its document (what the scorer reads).
The first token of every window after a document's first is read as context, not scored
(disjoint windows, no overlap).

Utilities (both higher is better, so removing a sublayer that matters gives a positive drop):

* ``nll``: v(S) = -(total NLL / scored tokens) = the mean log-likelihood per token, in nats (the
  negative of the mean token negative log-likelihood, the language-modelling loss).
* ``ppl``: v(S) = -perplexity = -exp(total NLL / scored tokens).

Per-item terms (``per_item``, one per document, float64 [n_docs]) have v as their mean: for
``nll`` the token-weighted document terms ``-NLL_d * D / N`` (D documents, N scored tokens); for
``ppl``, whose v is no mean of per-document numbers, the first-order (delta-method) linearisation
of ``-exp`` around the coalition's own mean NLL per token ``m``: ``v * (1 + x_d - m)`` with
``x_d = NLL_d * D / N`` the ``nll`` terms negated. Their mean is v exactly; statistics on them
(a cornerstone test given ``chance=``) are first-order approximations. Neither utility has a
chance level (``chance`` is None), so no cornerstones are reported unless ``chance=`` is given.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UsageError
from .kinds import TEXT_PREFIX as PREFIX
from .requests import Request, check_tokenizer
from .task import TaskFormatError, json_lines, text_lines
from .texts import calibration_texts

BUILTIN_TEXTS = ("lee", "pydoc")
UTILITIES = ("nll", "ppl")
DEFAULT_UTILITY = "nll"
UTILITY_NOTES = {
    "nll": "v = -(mean negative log-likelihood per token), nats; higher is better",
    "ppl": "v = -perplexity = -exp(mean negative log-likelihood per token); higher is better",
}


class TextTask:
    """Documents of plain text, scored token by token (see the module docstring).

    len(task): documents. utilities: ``nll``, ``ppl`` (no accuracy utility, no chance level).
    """

    utilities = UTILITIES
    accuracy_utilities: tuple[str, ...] = ()
    default_utility = DEFAULT_UTILITY
    chance = None

    def __init__(self, spec: str, documents: list[str], source: str = ""):
        if not documents:
            raise UsageError(f"text task {PREFIX}{spec} has no documents")
        self.spec = spec
        self.name = PREFIX + spec
        self.documents = list(documents)
        self.source = source
        self.notes = {"text": spec, "n_documents": len(self.documents)}

    def __len__(self) -> int:
        return len(self.documents)

    def subset(self, limit: int | None) -> TextTask:
        """The first ``limit`` documents (all of them when None or more)."""
        limit = _check_count(limit)
        if limit is None or limit >= len(self.documents):
            return self
        return TextTask(self.spec, self.documents[:limit], self.source)

    def check_utility(self, name: str | None) -> str:
        return check_text_utility(self.default_utility if name is None else name, self.name)

    def fingerprint(self) -> str:
        """A hash of the documents (the same texts from another file are the same task)."""
        payload = json.dumps(["text", self.documents])
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def requests(self, tokenizer: Any, max_length: int) -> list[Request]:
        """One Request per window of at most ``max_length`` tokens, documents in order
        (:func:`text_requests`)."""
        return text_requests(self.documents, tokenizer, max_length, self.name)

    def scorer(self, requests: list[Request]) -> TextScorer:
        """The :class:`TextScorer` of ``requests`` (this task's windows)."""
        return TextScorer(len(self.documents), requests, self.name)

    def __repr__(self) -> str:
        return f"TextTask({self.name!r}, {len(self)} documents)"


def text_requests(
    documents: list[str], tokenizer: Any, max_length: int, name: str = "text"
) -> list[Request]:
    """One Request per window of at most ``max_length`` tokens: ``group`` the window's index,
    ``unit`` its document's. Windows of one token score nothing and are left out (so a
    one-token document has none)."""
    check_tokenizer(tokenizer)
    if isinstance(max_length, bool) or int(max_length) != max_length or max_length < 2:
        raise UsageError(
            f"max_length must be >= 2 tokens for text task {name} (a window scores every token "
            f"after its first), got {max_length!r}"
        )
    max_length = int(max_length)
    bos = getattr(tokenizer, "bos_token_id", None)
    requests = []
    for d, text in enumerate(documents):
        ids = list(tokenizer.encode(text))
        if bos is not None and ids[:1] != [bos]:
            ids = [bos] + ids
        windows = [ids[i : i + max_length] for i in range(0, len(ids), max_length)]
        for window in windows:
            if len(window) > 1:
                requests.append(Request(len(requests), d, tuple(window[:-1]), tuple(window[1:])))
    if not requests:
        raise UsageError(f"no document of text task {name} has two or more tokens to score")
    return requests


class TextScorer:
    """Scores per-request log-likelihoods (float64 [n_requests]: each window's summed log-prob
    of its targets, in request order) of ``requests`` (:func:`text_requests` of
    ``n_documents`` documents) as ``nll`` or ``ppl`` (see the module docstring)."""

    utilities = UTILITIES
    accuracy_utilities: tuple[str, ...] = ()
    default_utility = DEFAULT_UTILITY

    def __init__(self, n_documents: int, requests: list[Request], name: str = "text"):
        self.n_documents = n_documents
        self.name = name
        document_of = np.array([r.unit for r in requests], dtype=np.int64)  # [n_requests]
        if len(document_of) and not 0 <= document_of.min() <= document_of.max() < n_documents:
            raise ValueError(f"a request's document is outside 0..{n_documents - 1}")
        self.document_of = document_of
        self.tokens = np.array([len(r.targets) for r in requests], dtype=np.float64)

    def check(self, utility: str | None) -> str:
        """``utility`` (None: ``nll``) if it is ``nll`` or ``ppl``; UsageError otherwise."""
        return check_text_utility(self.default_utility if utility is None else utility, self.name)

    def describe(self, utility: str) -> str:
        """What v(S) is and its sign, e.g. for ``nll``: ``"v = -(mean negative ...)"``."""
        return UTILITY_NOTES[self.check(utility)]

    def chance(self, utility: str) -> None:
        """None: a language-modelling utility has no chance level."""
        self.check(utility)
        return None

    def per_item(self, loglik: np.ndarray, utility: str) -> np.ndarray:
        """Per-document terms, float64 [n_docs], whose mean is v (see the module docstring)."""
        utility = self.check(utility)
        per_doc, total, n_tokens = self._sums(loglik)
        terms = per_doc * (self.n_documents / n_tokens)  # mean: total / n_tokens = nll's v
        if utility == "nll":
            return terms
        mean_nll = -total / n_tokens
        v = -np.exp(mean_nll)
        return v * (1.0 + (-terms - mean_nll))

    def __call__(self, loglik: np.ndarray, utility: str) -> float:
        utility = self.check(utility)
        _, total, n_tokens = self._sums(loglik)
        mean_ll = total / n_tokens
        return float(mean_ll if utility == "nll" else -np.exp(-mean_ll))

    def _sums(self, loglik: np.ndarray) -> tuple[np.ndarray, float, float]:
        """(summed log-likelihood per document [n_docs], over all, scored tokens)."""
        ll = np.asarray(loglik, dtype=np.float64)
        if ll.shape != self.document_of.shape:
            raise ValueError(
                f"expected {len(self.document_of)} log-likelihoods, got shape {ll.shape}"
            )
        per_doc = np.bincount(self.document_of, weights=ll, minlength=self.n_documents)
        return per_doc, float(ll.sum()), float(self.tokens.sum())


def check_text_utility(name: str, task_name: str = "text") -> str:
    """``name`` if it is a text task's utility (``nll``, ``ppl``); UsageError otherwise."""
    if name not in UTILITIES:
        raise UsageError(
            f"utility {name!r} does not apply to text task {task_name}; choose "
            + " or ".join(f"{u} ({UTILITY_NOTES[u]})" for u in UTILITIES)
        )
    return name


# --- loading -------------------------------------------------------------------------------------
def load_text(name_or_path: str | Path, n: int | None = None) -> TextTask:
    """The documents of ``name_or_path`` as a :class:`TextTask` (``"text:"`` in front is allowed).

    name_or_path: ``"lee"``, ``"pydoc"``, a ``.jsonl`` file (one JSON object with a ``"text"``
    string per line; blank lines skipped) or another text file (one document per line,
    stripped). n: keep the first ``n`` documents (None: all).
    """
    spec = str(name_or_path)
    if spec.startswith(PREFIX):
        spec = spec[len(PREFIX) :]
    n = _check_count(n)
    if not spec.strip():
        raise UsageError(
            f"text task {PREFIX!r} names no text; give {PREFIX}lee, {PREFIX}pydoc or "
            f"{PREFIX}<file.txt|file.jsonl>"
        )
    if spec in BUILTIN_TEXTS:
        return TextTask(spec, calibration_texts(spec, n), source=spec)
    path = Path(spec).expanduser()
    if path.is_dir():
        raise UsageError(f"text task {PREFIX}{spec}: {path} is a folder, not a text file")
    if not path.is_file():
        raise UsageError(
            f"unknown text task {PREFIX}{spec}: neither {' nor '.join(map(repr, BUILTIN_TEXTS))} "
            "nor an existing file (a .txt with one document per line, or a .jsonl with a "
            '"text" field per line)'
        )
    documents = _read_jsonl(path) if path.suffix.lower() == ".jsonl" else _read_lines(path)
    if not documents:
        raise TaskFormatError(f"{path} holds no documents (every line is blank)")
    return TextTask(spec, documents[:n], source=str(path))


def _read_lines(path: Path) -> list[str]:
    return [t for t in (line.strip() for line in text_lines(path)) if t]


def _read_jsonl(path: Path) -> list[str]:
    documents = []
    for lineno, _, row in json_lines(path):
        where = f"{path}:{lineno}"
        if not isinstance(row, dict) or "text" not in row:
            got = sorted(row) if isinstance(row, dict) else type(row).__name__
            raise TaskFormatError(f'{where}: expected a JSON object with a "text" field, got {got}')
        if not isinstance(row["text"], str):
            raise TaskFormatError(
                f'{where}: "text" must be a string, got {type(row["text"]).__name__}'
            )
        if row["text"].strip():
            documents.append(row["text"])
    return documents


def _check_count(n: Any) -> int | None:
    if n is None:
        return None
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise UsageError(f"the number of documents (limit, n) must be an integer >= 1, got {n!r}")
    return int(n)
