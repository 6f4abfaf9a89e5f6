"""Real multiple-choice tasks built at run time from data that pip packages ship.

* ``capitals`` — world capitals from the Red-Trivia source package (197 questions, 4-way,
  distractors are other countries' capitals).
* ``analogies`` — the Google analogy test set inside the gensim wheel (19,544 items in 14
  sections) as 4-way cloze items, distractors from the same section.
* ``bigbench:<task>`` — a multiple-choice JSON task of the BIG-bench source package (a 358 MB
  download, so optional), e.g. ``bigbench:movie_recommendation``.

Distractors are drawn with a fixed seed so that a task is the same on every machine; the
``seed`` of :func:`layerfast.tasks.load` only picks the ``limit`` subset.
"""

from __future__ import annotations

import json
import random
import tarfile
from collections.abc import Callable

import yaml

from .. import assets
from ..errors import UsageError
from .task import Item, Task, TaskFormatError

_DISTRACTOR_SEED = 1234
N_CHOICES = 4


def _with_distractors(
    gold: str, pool: list[str], exclude: set[str], rng: random.Random
) -> tuple[list[str], int]:
    """gold plus N_CHOICES-1 distinct distractors from pool (none in exclude), shuffled."""
    candidates = sorted({p for p in pool if p not in exclude and p.lower() != gold.lower()})
    choices = rng.sample(candidates, N_CHOICES - 1) + [gold]
    rng.shuffle(choices)
    return choices, choices.index(gold)


def capital_questions() -> dict[str, list[str]]:
    """The source's questions in file order, each with its valid answers (the first is the
    canonical one; the rest are other spellings or other capitals)."""
    path = assets.fetch(assets.WORLD_CAPITALS)
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    return {q: [str(a) for a in answers] for q, answers in data.items() if q != "AUTHOR"}


def capitals() -> Task:
    """'Q: What is the capital of X?\\nA:' -> ' <capital>' among 4 capitals."""
    questions = capital_questions()
    pool = [answers[0] for answers in questions.values()]
    rng = random.Random(_DISTRACTOR_SEED)
    items = []
    for question, answers in questions.items():
        valid = {a.lower() for a in answers}
        choices, gold = _with_distractors(
            answers[0], pool, {a for a in pool if a.lower() in valid}, rng
        )
        items.append(Item(f"Q: {question.strip()}\nA:", tuple(choices), gold, question.strip()))
    return Task(
        "capitals",
        items,
        source=f"{assets.WORLD_CAPITALS.requirement}: "
        f"{assets.WORLD_CAPITALS.member} ({assets.WORLD_CAPITALS.license})",
    )


def analogy_sections() -> dict[str, list[list[str]]]:
    """The analogy rows ``[a, b, c, d]`` ("a is to b as c is to d") of each section, in file
    order."""
    path = assets.fetch(assets.ANALOGIES)
    sections: dict[str, list[list[str]]] = {}
    section = None
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.startswith(":"):
            section = line[1:].strip()
            sections.setdefault(section, [])
        elif line.strip():
            words = line.split()
            if section is None or len(words) != 4:
                raise TaskFormatError(f"{path}:{lineno}: expected 4 words after a ': section' line")
            sections[section].append(words)
    return sections


def analogies() -> Task:
    """'Athens is to Greece as Baghdad is to' -> ' Iraq' among 4 words of the same section."""
    sections = analogy_sections()
    rng = random.Random(_DISTRACTOR_SEED)
    items = []
    for name, rows in sections.items():
        pool = sorted({r[3] for r in rows})  # unique words: rows repeat them (O(rows^2) otherwise)
        for k, (a, b, c, d) in enumerate(rows):
            choices, gold = _with_distractors(d, pool, {a, b, c}, rng)
            items.append(Item(f"{a} is to {b} as {c} is to", tuple(choices), gold, f"{name}/{k}"))
    return Task(
        "analogies",
        items,
        source=f"{assets.ANALOGIES.requirement}: "
        f"{assets.ANALOGIES.member} ({assets.ANALOGIES.license})",
    )


BIGBENCH = assets.PackagedFile("bigbench==1.0.0", "", "Apache-2.0")


def bigbench_json(name: str) -> tuple[dict, str]:
    """(the parsed ``task.json`` of BIG-bench task ``name``, its path in the archive)."""
    archive = assets.download_archive(BIGBENCH.requirement)
    member = f"bigbench/benchmark_tasks/{name}/task.json"
    with tarfile.open(archive) as tf:
        found = [m for m in tf.getmembers() if m.name.endswith("/" + member)]
        if not found:
            available = sorted(
                {
                    m.name.split("/")[-2]
                    for m in tf.getmembers()
                    if m.name.endswith("/task.json") and "benchmark_tasks" in m.name
                }
            )
            raise UsageError(f"no BIG-bench task {name!r}; available: {', '.join(available)}")
        return json.load(tf.extractfile(found[0])), member


def bigbench_context(data: dict, example: dict) -> str:
    """An example's prompt: the task's input prefix (default "Q: "), the input, its output
    prefix (default "\\nA:")."""
    prefix = data.get("example_input_prefix", "\nQ: ").lstrip("\n")
    out_prefix = data.get("example_output_prefix", "\nA:").rstrip(" ")
    return f"{prefix}{example['input']}{out_prefix}"


def bigbench(name: str) -> Task:
    """A BIG-bench JSON task with ``target_scores`` e.g. 'movie_recommendation'."""
    data, member = bigbench_json(name)
    items = []
    for k, ex in enumerate(data.get("examples", [])):
        scores = ex.get("target_scores")
        if not scores or len(scores) < 2:
            continue
        choices = list(scores)
        gold = max(range(len(choices)), key=lambda i: scores[choices[i]])
        items.append(Item(bigbench_context(data, ex), tuple(choices), gold, str(k)))
    if not items:
        raise UsageError(f"BIG-bench task {name!r} has no multiple-choice examples")
    return Task(
        f"bigbench:{name}",
        items,
        source=f"{BIGBENCH.requirement}: {member}",
        notes={"canary": "BIG-bench data must never be used for training"},
    )


BUILTIN: dict[str, Callable[[], Task]] = {"capitals": capitals, "analogies": analogies}
