"""The built-in tasks of :mod:`.builtin` in generative form: the model writes the answer.

* ``capitals-gen`` — 'Q: What is the capital of X?\\nA:' after two worked questions (Peru, Kenya:
  they fix the answer's form), every answer the source accepts as a target (other spellings, and
  every capital of a country that has several);
* ``analogies-gen`` — 'a is to b as c is to', target d;
* ``bigbench-gen:<task>`` — the examples of a BIG-bench JSON task that carry ``target``
  strings.

Both named tasks stop at a newline, a full stop or a comma (so "Lima, Peru" is scored as
"Lima") and generate at most 8 tokens; their items, ids and order are those of the
multiple-choice forms, so ``limit``/``seed`` pick the same items in both; their
``notes["likelihood_form"]`` names that form. BIG-bench tasks stop at a newline and generate at
most 32 tokens.
"""

from __future__ import annotations

from collections.abc import Callable

from .. import assets
from ..errors import UsageError
from . import builtin
from .gen_task import GenItem, GenTask
from .kinds import GENERATIVE_PREFIX

SHORT_ANSWER_STOPS = ("\n", ".", ",")
# Two worked questions before each capitals question fix the answer's form (a name, then a new
# line); zero-shot, small models answer in sentences ("The capital of Sudan is ...").
CAPITAL_SHOTS = (
    "Q: What is the capital of Peru?\nA: Lima\nQ: What is the capital of Kenya?\nA: Nairobi\n"
)
SHORT_ANSWER_TOKENS = 8
BIGBENCH_STOPS = ("\n",)
BIGBENCH_TOKENS = 32


def capitals_gen() -> GenTask:
    """'Q: What is the capital of X?\\nA:' -> every valid answer of the source."""
    items = []
    for question, answers in builtin.capital_questions().items():
        targets = tuple(dict.fromkeys(a.strip() for a in answers if a.strip()))
        items.append(
            GenItem(f"{CAPITAL_SHOTS}Q: {question.strip()}\nA:", targets, question.strip())
        )
    source = assets.WORLD_CAPITALS
    return GenTask(
        "capitals-gen",
        items,
        source=f"{source.requirement}: {source.member} ({source.license})",
        notes={"likelihood_form": "capitals"},  # the multiple-choice form of the same items
        until=SHORT_ANSWER_STOPS,
        max_new_tokens=SHORT_ANSWER_TOKENS,
    )


def analogies_gen() -> GenTask:
    """'Athens is to Greece as Baghdad is to' -> 'Iraq'."""
    items = [
        GenItem(f"{a} is to {b} as {c} is to", (d,), f"{name}/{k}")
        for name, rows in builtin.analogy_sections().items()
        for k, (a, b, c, d) in enumerate(rows)
    ]
    source = assets.ANALOGIES
    return GenTask(
        "analogies-gen",
        items,
        source=f"{source.requirement}: {source.member} ({source.license})",
        notes={"likelihood_form": "analogies"},  # the multiple-choice form of the same items
        until=SHORT_ANSWER_STOPS,
        max_new_tokens=SHORT_ANSWER_TOKENS,
    )


def bigbench_gen(name: str) -> GenTask:
    """A BIG-bench JSON task's examples with ``target`` (a string or a list of strings), e.g.
    'bigbench-gen:qa_wikidata'; the prompt is the multiple-choice form's
    (:func:`~.builtin.bigbench_context`)."""
    data, member = builtin.bigbench_json(name)
    items = []
    for k, ex in enumerate(data.get("examples", [])):
        target = ex.get("target")
        targets = [target] if isinstance(target, str) else target
        if not isinstance(targets, list) or not all(isinstance(t, str) for t in targets):
            continue
        targets = tuple(dict.fromkeys(t for t in targets if t.strip()))
        if targets:
            items.append(GenItem(builtin.bigbench_context(data, ex), targets, str(k)))
    if not items:
        raise UsageError(
            f"BIG-bench task {name!r} has no examples with 'target' strings (a generative "
            f"task); {builtin.BIGBENCH.requirement}: {member}"
        )
    return GenTask(
        f"{GENERATIVE_PREFIX}{name}",
        items,
        source=f"{builtin.BIGBENCH.requirement}: {member}",
        notes={"canary": "BIG-bench data must never be used for training"},
        until=BIGBENCH_STOPS,
        max_new_tokens=BIGBENCH_TOKENS,
    )


GEN_BUILTIN: dict[str, Callable[[], GenTask]] = {
    "capitals-gen": capitals_gen,
    "analogies-gen": analogies_gen,
}
