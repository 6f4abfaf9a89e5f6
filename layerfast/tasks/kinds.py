"""Which kind of task a spec names, answered from the spec's text alone: the command line checks
its flags with :func:`kind` before anything loads, and :func:`layerfast.tasks.load` dispatches on
it.

* ``"lm_eval"``: ``lm_eval:<task or group>``, an lm-evaluation-harness task, loaded by the
  bridge :mod:`layerfast.bridges.lm_eval_load` (reached by name from :func:`layerfast.tasks.load`,
  so that importing ``layerfast.tasks`` imports neither the bridge nor the harness);
* ``"text"``: ``text:<lee|pydoc|file>``, plain text scored token by token;
* ``"choice"``: multiple-choice items: a built-in name (``capitals``, ``analogies``,
  ``bigbench:<task>``) or a JSONL file; also the generative tasks that the same loader reads
  (``capitals-gen``, ``analogies-gen``, ``bigbench-gen:<task>``, a JSONL file of ``targets``).

Whether a spec names a generative task (scored on generated text, :mod:`.prompts`) is
:func:`is_generative_spec`: True, False, or None where only the file's lines can tell.
"""

from __future__ import annotations

from pathlib import Path

CHOICE, TEXT, LM_EVAL = "choice", "text", "lm_eval"
KINDS = (CHOICE, TEXT, LM_EVAL)
HARNESS_PREFIX = "lm_eval:"
TEXT_PREFIX = "text:"
GENERATIVE_PREFIX = "bigbench-gen:"
GENERATIVE_NAMES = frozenset({"capitals-gen", "analogies-gen"})
_FILE_SUFFIXES = (".jsonl", ".json")


def kind(spec: str | Path) -> str:
    """``"lm_eval"``, ``"text"`` or ``"choice"`` for a task spec (a name, prefix spec or path)."""
    text = str(spec)
    if text.startswith(HARNESS_PREFIX):
        return LM_EVAL
    if text.startswith(TEXT_PREFIX):
        return TEXT
    return CHOICE


def is_generative_spec(spec: str | Path) -> bool | None:
    """True for a spec that names a generative task (``*-gen``, ``bigbench-gen:<task>``), False
    for the other named tasks (``capitals``, ``bigbench:<task>``, ``text:``), None where it
    cannot be told without reading data: a JSONL file (an existing file, a name ending in
    ``.jsonl``/``.json`` or holding a path separator), an ``lm_eval:`` task."""
    text = str(spec)
    if text.startswith(HARNESS_PREFIX):
        return None
    if text.startswith(TEXT_PREFIX):
        return False
    if text.startswith(GENERATIVE_PREFIX):
        return True
    if text.endswith(_FILE_SUFFIXES) or "/" in text or "\\" in text:
        return None
    if Path(text).expanduser().is_file():
        return None
    return text in GENERATIVE_NAMES or text.endswith("-gen")
