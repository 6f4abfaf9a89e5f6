"""The generative scorer: one generated text per item -> one utility per coalition.

The texts come cut before their first stop string (:func:`~.prompts.cut_at_stops`, done by
evaluation). Both utilities compare a text with every target of its item and keep the best:

* ``exact_match``: 1.0 when the normalised text equals a normalised target, else 0.0;
* ``f1``: SQuAD's token-level F1, the bag of whitespace tokens of the normalised text against
  that of a target.

The normalisation of our own tasks (:data:`SQUAD`) is SQuAD's ``normalize_answer``, which
:func:`normalise` spells with lm-evaluation-harness's ``exact_match`` options: lower case
(``ignore_case``), the ASCII punctuation of ``string.punctuation`` removed
(``ignore_punctuation``), the words "a", "an", "the" removed (``remove_articles``, the regex
``\\b(a|an|the)\\b``), whitespace runs made one space and the ends trimmed (``strip``). So "The
Cat sat." and " cat  sat" both normalise to "cat sat".
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import UsageError

ACCURACY_UTILITIES = ("exact_match",)
UTILITIES = ("exact_match", "f1")
DEFAULT_UTILITY = "exact_match"

SQUAD = {"ignore_case": True, "ignore_punctuation": True, "remove_articles": True, "strip": True}
_PUNCTUATION = str.maketrans("", "", string.punctuation)  # the harness's table
_DIGITS = str.maketrans("", "", string.digits)
_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)  # SQuAD's

_DESCRIPTIONS = {
    "exact_match": "v = fraction of items whose generated answer equals one of its targets "
    "after normalisation (lower case, no punctuation, no articles, single spaces)",
    "f1": "v = mean over items of the best SQuAD token F1 between the generated answer and "
    "a target (0..1)",
}


def check_utility(name: str) -> str:
    """``name`` if it is a generative utility; UsageError listing them otherwise."""
    if name not in UTILITIES:
        raise UsageError(
            f"unknown utility {name!r} for a generative task; choose one of {', '.join(UTILITIES)}"
        )
    return name


def normalise(
    text: str,
    ignore_case: bool = True,
    ignore_punctuation: bool = True,
    regexes_to_ignore: Sequence[str] = (),
    strip: bool = True,
    remove_articles: bool = False,
    ignore_numbers: bool = False,
) -> str:
    """``text`` normalised in this order (the harness's ``exact_match`` order, then SQuAD's):

    1. every match of each pattern of ``regexes_to_ignore`` removed (``re.sub(p, "", text)``);
    2. ``ignore_case``: lower-cased (``str.lower``);
    3. ``ignore_punctuation``: the characters of ``string.punctuation`` removed;
    4. ``ignore_numbers``: the digits 0-9 removed;
    5. ``remove_articles``: the words "a", "an", "the" replaced by a space (SQuAD);
    6. ``strip``: whitespace runs made one space, the ends trimmed (SQuAD's white_space_fix).

    With ``strip=False`` and ``remove_articles=False`` this is exactly what
    lm-evaluation-harness's ``exact_match`` compares (which neither strips nor collapses).
    """
    for pattern in regexes_to_ignore:
        text = re.sub(pattern, "", text)
    if ignore_case:
        text = text.lower()
    if ignore_punctuation:
        text = text.translate(_PUNCTUATION)
    if ignore_numbers:
        text = text.translate(_DIGITS)
    if remove_articles:
        text = _ARTICLES.sub(" ", text)
    if strip:
        text = " ".join(text.split())
    return text


def exact_match(
    prediction: str,
    targets: str | Sequence[str],
    ignore_case: bool = True,
    ignore_punctuation: bool = True,
    regexes_to_ignore: Sequence[str] = (),
    strip: bool = True,
    remove_articles: bool = False,
    ignore_numbers: bool = False,
) -> float:
    """1.0 when ``prediction`` equals one of ``targets`` (a string: one target) once both are
    :func:`normalise` d with these options, else 0.0."""
    options = {
        "ignore_case": ignore_case,
        "ignore_punctuation": ignore_punctuation,
        "regexes_to_ignore": tuple(regexes_to_ignore),
        "strip": strip,
        "remove_articles": remove_articles,
        "ignore_numbers": ignore_numbers,
    }
    if isinstance(targets, str):
        targets = (targets,)
    guess = normalise(prediction, **options)
    return float(any(guess == normalise(t, **options) for t in targets))


def token_f1(prediction: str, targets: str | Sequence[str]) -> float:
    """The best over ``targets`` of SQuAD's token F1 with ``prediction``: both normalised as
    SQuAD does (:data:`SQUAD`) and split at whitespace; with ``common`` the size of the
    multiset intersection of the two bags of tokens, precision = common / len(prediction
    tokens), recall = common / len(target tokens), F1 = 2PR / (P + R) (0 when nothing is
    shared). When either side has no tokens, F1 is 1.0 if both have none, else 0.0."""
    if isinstance(targets, str):
        targets = (targets,)
    guess = normalise(prediction, **SQUAD).split()
    return max(_f1(guess, normalise(t, **SQUAD).split()) for t in targets)


def _f1(guess: Sequence[str], target: Sequence[str]) -> float:
    if not guess or not target:
        return float(list(guess) == list(target))
    common = sum((Counter(guess) & Counter(target)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(guess), common / len(target)
    return 2 * precision * recall / (precision + recall)


class GenScorer:
    """Scores the generated texts of a generative task ``task`` (its ``name`` and ``items``,
    each with ``targets``): one text per prompt, in prompt order; ``prompts``, when given, are
    checked to be one per item (their ``unit`` the item's index) and say which item each text
    answers. Normalisation: :data:`SQUAD` (module docstring)."""

    utilities = UTILITIES
    accuracy_utilities = ACCURACY_UTILITIES
    default_utility = DEFAULT_UTILITY

    def __init__(self, task: Any, prompts: Sequence[Any] | None = None):
        self.task = task
        n = len(task.items)
        if prompts is None:
            self.units = np.arange(n)
        else:
            if len(prompts) != n:
                raise ValueError(f"{len(prompts)} prompts for the {n} items of task {task.name!r}")
            self.units = np.array([p.unit for p in prompts], dtype=np.int64)
            if sorted(self.units.tolist()) != list(range(n)):
                raise ValueError(
                    f"the prompts of task {task.name!r} must answer each of its {n} items once "
                    "(their units: the item indices)"
                )
        # normalised once: a sweep scores the same targets for every coalition
        self.norm_targets = [
            tuple(normalise(t, **SQUAD) for t in item.targets) for item in task.items
        ]
        self.target_tokens = [tuple(t.split() for t in ts) for ts in self.norm_targets]

    def check(self, utility: str | None) -> str:
        """``utility`` (None: ``exact_match``) if it is known; UsageError otherwise."""
        return check_utility(self.default_utility if utility is None else utility)

    def describe(self, utility: str) -> str:
        """What v is, in one sentence."""
        return _DESCRIPTIONS[self.check(utility)]

    def chance(self, utility: str) -> float | None:
        """0.0 for ``exact_match`` (a guess from an open vocabulary matches no target); None
        for ``f1``, which has no chance level."""
        return 0.0 if self.check(utility) in ACCURACY_UTILITIES else None

    def per_item(self, texts: Sequence[str], utility: str) -> np.ndarray:
        """texts [n_prompts] (in prompt order, cut at their stops) -> per-item terms float64
        [n_items]; their mean is v."""
        utility = self.check(utility)
        if len(texts) != len(self.units):
            raise ValueError(
                f"{len(texts)} generated texts for the {len(self.units)} prompts of task "
                f"{self.task.name!r}"
            )
        out = np.zeros(len(self.norm_targets), dtype=np.float64)
        for unit, text in zip(self.units.tolist(), texts):
            guess = normalise(text, **SQUAD)
            if utility == "exact_match":
                out[unit] = float(guess in self.norm_targets[unit])
            else:
                tokens = guess.split()
                out[unit] = max(_f1(tokens, t) for t in self.target_tokens[unit])
        return out

    def __call__(self, texts: Sequence[str], utility: str) -> float:
        return float(np.mean(self.per_item(texts, utility)))
