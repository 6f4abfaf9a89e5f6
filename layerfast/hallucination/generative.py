"""EAVSS on generative tasks (``task.generative``: ``capitals-gen``, a JSONL of ``targets``, a
harness ``generate_until`` task), as the EAVSS paper judges hallucination on open QA.

Split: the full model greedily generates each item's answer (the task's ``GenerativeGame``, so
its cache is shared with the other verbs); the item is right (group C) when the chosen 0/1
utility scores it 1 (``exact_match``: the answer equals a target after normalisation), else a
hallucination (group H). A utility is accepted when the task lists it among its accuracy
utilities, or, for a task that lists none (harness tasks), when every per-item value is 0 or 1.

What the statistics are about: the text the model actually read and produced. Each item's
sequence is its prompt (as the model read it, left-truncated as in the game) followed by the
generated token ids exactly as decoded (the stop token and an EOS included: they are what the
model produced; the scored text is cut before the stop), less the last generated token, which
the model never read: :func:`generated_requests`. So the ``answer`` scope holds the positions
whose next-token distributions produced the answer (the prompt's last token through the
second-to-last generated token), the ``sequence`` scope every position the model computed while
answering. Nothing is re-tokenised from text.

Fine-tuning (``eavss --finetune``): per training item, the correct continuation is the first
target and the hallucinated one the model's own generated (wrong) answer; the fine-tuning of
:mod:`.contrastive` runs on the multiple-choice task of those two choices, gold the target
(:func:`contrastive_task`). An item the model got right, or whose answer is blank, has only the
target: it adds the target's NLL and no contrastive term (InfoNCE over one choice is 0).
Accuracy before/after is the utility of freshly generated answers; "gold log-prob" the summed
log-prob of the first target (after a space) given the prompt (:func:`evaluate`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import UsageError
from ..tasks import Item, Task
from ..tasks.requests import Request

N_EXAMPLES = 5  # wrong generations recorded in the output


class OneGroupEmpty(UsageError):
    """Every item is right, or every item wrong: no contrast to score. ``record`` is the split
    (:func:`split_record`), ``rows`` the per-item generations (:func:`item_rows`)."""

    def __init__(self, message: str, record: dict, rows: list[dict]):
        super().__init__(message)
        self.record, self.rows = record, rows


@dataclass
class Outcomes:
    """The full model's answers to a generative task, in item order."""

    correct: np.ndarray  # int [n_items], 1 = right (group C)
    texts: list[str]  # the scored generated text per item (cut at the stops)
    requests: list[Request]  # per item: prompt + generated tokens (see the module docstring)
    utility: str


def check_utility(task: Any, utility: str | None) -> str:
    """``utility`` (None: the task's default, ``exact_match``) if it can split items into right
    and wrong; UsageError otherwise. A task without accuracy utilities is checked on its values
    (:func:`outcomes`)."""
    name = task.check_utility(utility)
    accuracy = tuple(getattr(task.scorer(None), "accuracy_utilities", ()) or ())
    if accuracy and name not in accuracy:
        raise UsageError(
            f"utility must be one of {accuracy} (a right/wrong split) for generative task "
            f"{task.name}, got {name!r}"
        )
    return name


def generated_requests(prompts, outputs, n_items: int) -> list[Request]:
    """One request per item (``group`` the item, the first prompt of each item): input = prompt
    + generated tokens less the last, targets = the generated tokens. A generation is never
    empty (decoding produces at least one token); were it, the answer scope would be the
    prompt's last position."""
    out: list[Request | None] = [None] * n_items
    for p, gen in zip(prompts, outputs, strict=True):
        if out[p.unit] is not None:
            continue
        gen = [int(t) for t in gen]
        if gen:
            seq = list(p.input_ids) + gen
            out[p.unit] = Request(p.unit, 0, tuple(seq[:-1]), tuple(gen), p.n_dropped)
        else:
            ids = tuple(p.input_ids)
            out[p.unit] = Request(p.unit, 0, ids, ids[-1:], p.n_dropped)
    missing = [i for i, r in enumerate(out) if r is None]
    if missing:
        raise ValueError(f"no prompt answers items {missing[:5]}")
    return out  # type: ignore[return-value]


def outcomes(model: Any, task: Any, utility: str, game=None, progress: bool = True) -> Outcomes:
    """The full model's generated answers, their right/wrong split and the statistics'
    sequences; ``game``: an existing ``lf.Game`` of ``task`` (its outputs and cache reused)."""
    from ..evaluation.game import Game

    if game is None:
        game = Game(model, task, utility=utility, progress=progress)
    full = game.full_mask()
    (tokens,) = game.outputs(full[None])
    values = game.per_item(full, utility)
    if not np.isin(values, (0.0, 1.0)).all():
        odd = values[~np.isin(values, (0.0, 1.0))][:3].round(3).tolist()
        raise UsageError(
            f"utility {utility!r} of task {task.name} is not 0/1 per item (e.g. {odd}): EAVSS "
            "splits items into right and wrong; choose a 0/1 metric such as exact_match"
        )
    texts = [""] * len(values)
    seen = set()
    for p, text in zip(game.prompts, game.texts(full), strict=True):
        if p.unit not in seen:
            seen.add(p.unit)
            texts[p.unit] = text
    requests = generated_requests(game.prompts, tokens, len(values))
    return Outcomes(values.astype(int), texts, requests, utility)


def _item(task: Any, i: int) -> tuple[str, str | None, list[str] | None]:
    """(id, context, targets) of item ``i``; None where the task keeps no such field."""
    items = getattr(task, "items", None)
    if items is None:
        return str(i), None, None
    it = items[i]
    return str(it.id), it.context, list(it.targets)


def item_rows(task: Any, correct: np.ndarray, texts: list[str]) -> list[dict]:
    """One row per item: index, id, right (0/1), the generated text, the targets (" | ")."""
    rows = []
    for i, (c, text) in enumerate(zip(correct.tolist(), texts, strict=True)):
        item_id, context, targets = _item(task, i)
        rows.append(
            {
                "item": i,
                "id": item_id,
                "right": int(c),
                "generated": text,
                "targets": "" if targets is None else " | ".join(targets),
                "context": "" if context is None else context,
            }
        )
    return rows


def split_record(task: Any, out: Outcomes, n_examples: int = N_EXAMPLES) -> dict:
    """What the output records: counts and the first ``n_examples`` wrong generations."""
    wrong = np.flatnonzero(out.correct == 0)[:n_examples]
    examples = []
    for i in wrong.tolist():
        item_id, context, targets = _item(task, i)
        examples.append(
            {"item": i, "id": item_id, "context": context, "generated": out.texts[i],
             "targets": targets}
        )  # fmt: skip
    return {
        "utility": out.utility,
        "n_right": int(out.correct.sum()),
        "n_wrong": int(len(out.correct) - out.correct.sum()),
        "sequence": "prompt + generated tokens (the last generated token not read)",
        "wrong_examples": examples,
    }


def empty_group_message(task: Any, record: dict) -> str:
    """Why EAVSS cannot be scored when one group is empty, with an example when all are
    wrong."""
    n_right, n_wrong = record["n_right"], record["n_wrong"]
    n = n_right + n_wrong
    which = "every item is right" if n_wrong == 0 else "every item is wrong"
    msg = (
        f"the full model's generated answer is right ({record['utility']}) on {n_right} of {n} "
        f"items of {task.name} ({which}): EAVSS contrasts right with wrong items and needs both; "
        "use more items (--limit), another task, or a prompt format the model answers in"
    )
    if record["wrong_examples"]:
        ex = record["wrong_examples"][0]
        targets = ex["targets"][:3] if ex["targets"] is not None else "?"
        msg += f" (e.g. item {ex['id']!r}: generated {ex['generated']!r}, targets {targets})"
    return msg


def summary(record: dict) -> str:
    """Lines for stdout: the counts and the recorded wrong generations."""
    lines = [
        f"generated answers: {record['n_right']} right, {record['n_wrong']} wrong "
        f"({record['utility']})"
    ]
    for ex in record["wrong_examples"]:
        targets = "?" if ex["targets"] is None else " | ".join(ex["targets"][:3])
        lines.append(f"  wrong {ex['id']!r}: {ex['generated']!r} (targets: {targets})")
    return "\n".join(lines)


# --- the fine-tuning experiment ------------------------------------------------------------------
def check_items(task: Any, what: str) -> list:
    items = getattr(task, "items", None)
    if items is None or not all(hasattr(it, "targets") for it in items):
        raise UsageError(
            f"{what} needs a generative task with items and targets (a built-in -gen task or a "
            f"JSONL file); {task.name} has none"
        )
    return items


def contrastive_task(task: Any, correct: np.ndarray, texts: list[str]) -> Task:
    """The multiple-choice task :func:`~.contrastive.finetune` trains on: per item the first
    target (gold, choice 0) and, for a wrong non-blank answer, the generated text (choice 1);
    delimiter a space (both stripped)."""
    items = []
    for it, c, text in zip(check_items(task, "--finetune"), correct.tolist(), texts, strict=True):
        gold, said = it.targets[0].strip(), text.strip()
        choices = (gold,) if c or not said or said == gold else (gold, said)
        items.append(Item(it.context, choices, 0, it.id))
    return Task(f"{task.name}-contrastive", items, " ", task.source, dict(task.notes))


def gold_task(task: Any) -> Task:
    """Each item's context with its first target as the only choice (after a space): the
    multiple-choice ``logprob`` of this task is the gold log-prob per item."""
    items = [
        Item(it.context, (it.targets[0].strip(),), 0, it.id)
        for it in check_items(task, "the gold log-prob")
    ]
    return Task(f"{task.name}-gold", items, " ", task.source, dict(task.notes))


def evaluate(model: Any, task: Any, utility: str) -> dict:
    """:func:`~.experiment.evaluate` of a generative task: the utility of freshly generated
    answers per item and the gold (first target) log-prob per item."""
    from ..evaluation.game import Game

    game = Game(model, task, utility=utility, progress=False)
    correct = game.per_item(game.full_mask())
    gold = Game(model, gold_task(task), utility="logprob", progress=False)
    logprob = gold.per_item(gold.full_mask())
    return {
        "acc": float(correct.mean()),
        "logprob": float(logprob.mean()),
        "correct": correct,
        "gold_logprob": logprob,
    }
