"""Which kind of task a spec names, answered from the spec's text alone: the command line checks
its flags with :func:`kind` before anything loads, and :func:`layerfast.tasks.load` dispatches on
it.

* ``"lm_eval"``: ``lm_eval:<task or group>``, an lm-evaluation-harness task, loaded by the
  bridge :mod:`layerfast.bridges.lm_eval_load` (reached by name from :func:`layerfast.tasks.load`,
  so that importing ``layerfast.tasks`` imports neither the bridge nor the harness);
* ``"text"``: ``text:<lee|pydoc|file>``, plain text scored token by token;
* ``"choice"``: multiple-choice items: a built-in name (``capitals``, ``analogies``,
  ``bigbench:<task>``) or a JSONL file.
"""

from __future__ import annotations

from pathlib import Path

CHOICE, TEXT, LM_EVAL = "choice", "text", "lm_eval"
KINDS = (CHOICE, TEXT, LM_EVAL)
HARNESS_PREFIX = "lm_eval:"
TEXT_PREFIX = "text:"


def kind(spec: str | Path) -> str:
    """``"lm_eval"``, ``"text"`` or ``"choice"`` for a task spec (a name, prefix spec or path)."""
    text = str(spec)
    if text.startswith(HARNESS_PREFIX):
        return LM_EVAL
    if text.startswith(TEXT_PREFIX):
        return TEXT
    return CHOICE
