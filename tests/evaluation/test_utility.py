"""Utilities on hand-built log-likelihood vectors, with the expected answers worked out here."""

from __future__ import annotations

import numpy as np
import pytest

from layerfast.tasks import Item, Task
from layerfast.tasks.scoring import UTILITIES, Scorer, check_utility


def task_of(*items):
    """items: (choices, gold) pairs."""
    return Task(
        "t",
        [Item(f"ctx {k}", tuple(choices), gold, str(k)) for k, (choices, gold) in enumerate(items)],
    )


def test_acc_and_acc_norm_disagree_on_choice_lengths():
    # gold "a" (1 char) has -2.0; "bbbbbbbbbb" (10 chars) has -5.0.
    # acc: -2 > -5 -> choice 0 (right). acc_norm: -2/1 = -2 < -5/10 = -0.5 -> choice 1 (wrong).
    scorer = Scorer(task_of((["a", "bbbbbbbbbb"], 0)))
    ll = np.array([-2.0, -5.0])
    assert scorer.predictions(ll, "acc").tolist() == [0]
    assert scorer.predictions(ll, "acc_norm").tolist() == [1]
    assert scorer(ll, "acc") == 1.0
    assert scorer(ll, "acc_norm") == 0.0


def test_acc_bytes_differs_from_acc_norm_on_unicode():
    # "東京": 2 characters, 6 UTF-8 bytes; "Tokyo": 5 characters, 5 bytes.
    # acc_norm: -3/2 = -1.5 < -6/5 = -1.2 -> "Tokyo". acc_bytes: -3/6 = -0.5 > -6/5 -> "東京".
    assert len("東京") == 2 and len("東京".encode()) == 6
    scorer = Scorer(task_of((["東京", "Tokyo"], 0)))
    ll = np.array([-3.0, -6.0])
    assert scorer.predictions(ll, "acc_norm").tolist() == [1]
    assert scorer.predictions(ll, "acc_bytes").tolist() == [0]
    assert (scorer(ll, "acc_norm"), scorer(ll, "acc_bytes")) == (0.0, 1.0)
    # acc on the raw sums picks "東京" too
    assert scorer(ll, "acc") == 1.0


def test_ties_go_to_the_first_choice():
    scorer = Scorer(task_of((["x", "y", "z"], 0), (["x", "y", "z"], 1), (["p", "q"], 1)))
    ll = np.array(
        [
            -1.0,
            -1.0,
            -1.0,  # 3-way tie, gold 0: right
            -4.0,
            -1.0,
            -1.0,  # tie between 1 and 2, gold 1: right
            -2.0,
            -2.0,
        ]
    )  # tie, gold 1: wrong (argmax picks 0)
    for utility in ("acc", "acc_norm", "acc_bytes"):  # equal lengths: same ties after scaling
        assert scorer.predictions(ll, utility).tolist() == [0, 1, 0]
        assert scorer(ll, utility) == pytest.approx(2 / 3)


def test_smooth_utilities_by_hand():
    scorer = Scorer(task_of((["a", "bb", "ccc"], 2), (["x", "y"], 0)))
    ll = np.array([-1.0, -3.0, -2.5, -0.5, -4.0])
    # logprob: mean gold log-prob = (-2.5 + -0.5) / 2
    assert scorer(ll, "logprob") == pytest.approx(-1.5)
    # margin: gold minus best other: (-2.5 - -1.0) = -1.5 and (-0.5 - -4.0) = 3.5 -> mean 1.0
    assert scorer.per_item(ll, "margin") == pytest.approx([-1.5, 3.5])
    assert scorer(ll, "margin") == pytest.approx(1.0)
    assert scorer.per_item(ll, "logprob").dtype == np.float64


def reference(items, ll, utility):
    """Plain-Python utility for (choices, gold) items and a flat log-likelihood list."""
    terms, pos = [], 0
    for choices, gold in items:
        vals = ll[pos : pos + len(choices)]
        pos += len(choices)
        if utility == "logprob":
            terms.append(vals[gold])
            continue
        if utility == "margin":
            terms.append(vals[gold] - max(v for j, v in enumerate(vals) if j != gold))
            continue
        length = {
            "acc": lambda c: 1,
            "acc_norm": len,
            "acc_bytes": lambda c: len(c.encode("utf-8")),
        }
        scaled = [v / length[utility](c) for v, c in zip(vals, choices)]
        best = 0
        for j in range(1, len(scaled)):
            if scaled[j] > scaled[best]:  # strictly greater: ties keep the first
                best = j
        terms.append(1.0 if best == gold else 0.0)
    assert pos == len(ll)
    return sum(terms) / len(terms)


@pytest.mark.parametrize("utility", UTILITIES)
def test_random_mixed_tasks_match_plain_python(utility):
    rng = np.random.default_rng(7)
    words = ["a", "Lima", "東京", "élan", "La Paz", "naïve façade", "Москва", "x y z", "Montevideo"]
    for _ in range(5):
        items = []
        for _ in range(int(rng.integers(3, 15))):
            n = int(rng.integers(2, 6))
            choices = [str(w) for w in rng.choice(words, size=n, replace=False)]
            items.append((choices, int(rng.integers(n))))
        n_req = sum(len(c) for c, _ in items)
        # rounded to quarters so that exact ties happen now and then
        ll = np.round(rng.uniform(-12, -0.5, size=n_req) * 4) / 4
        got = Scorer(task_of(*items))(ll, utility)
        assert isinstance(got, float)
        assert got == pytest.approx(reference(items, ll.tolist(), utility), abs=1e-12)


def test_unknown_utility_raises():
    scorer = Scorer(task_of((["a", "b"], 0)))
    with pytest.raises(ValueError, match="acc_norm"):
        scorer(np.array([-1.0, -2.0]), "accuracy")
    with pytest.raises(ValueError, match="unknown utility"):
        scorer.predictions(np.array([-1.0, -2.0]), "f1")
    with pytest.raises(ValueError, match="unknown utility"):
        check_utility("ACC")
    assert check_utility("margin") == "margin"
