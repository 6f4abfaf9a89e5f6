"""Every flag of every verb, declared once: :data:`FLAGS` maps an option string to its
``add_argument`` keywords, and :func:`add` is the one place that calls ``add_argument``. A verb
composes its flags from the groups below (:data:`SWEEP`, :data:`MODEL`, ...) and may override a
default or the help where its meaning is narrower (``--max-length`` of ``avss`` counts the
tokens of a calibration document, default 256), never the type.

``type=`` functions come from :mod:`layerfast.cli.values`: a value out of range fails at parse
time. :class:`Parser` turns argparse's errors into a :class:`FlagError` (a
:class:`~layerfast.errors.UsageError`), which :func:`layerfast.cli.main` prints as the one line
``layerfast VERB: error: --flag ...`` and exit code 2, as every other mistake. Choices come from
the library's registries (estimators, utilities; the statistics backends are read when a value
is parsed, since their module imports torch), so adding one takes one edit there.
"""

from __future__ import annotations

import argparse
import functools
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import UsageError
from . import values as v
from .flag_table import FLAGS


class FlagError(UsageError):
    """A flag argparse refused (a value of the wrong type or range, an unknown flag); ``prog``
    is the parser's (``layerfast ablate``)."""

    def __init__(self, prog: str, message: str):
        super().__init__(message)
        self.prog = prog


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are raised as :class:`FlagError` (one line, with the
    flag in front: ``--limit must be an integer >= 1, got 0``) instead of printing the usage and
    exiting, so that they read as every other mistake; ``--help`` still exits. The top parser
    keeps its verbs' sub-parsers in ``verb_parsers`` (name -> parser)."""

    verb_parsers: dict[str, argparse.ArgumentParser]

    def parse_args(self, args=None, namespace=None):
        """argparse's, with unknown arguments named with the verb they were given to."""
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            verb = getattr(parsed, "verb", None)
            prog = f"{self.prog} {verb}" if verb else self.prog
            raise FlagError(
                prog,
                f"unrecognized arguments: {' '.join(extras)} ('{prog} --help' lists the flags)",
            )
        return parsed

    def error(self, message: str):  # argparse: must not return
        match = re.fullmatch(r"argument (\S+): (.*)", message, re.S)
        if match:  # a type= function's message names the flag itself (see add)
            flag, text = match.groups()
            message = text if text.startswith(flag + " ") else f"{flag}: {text}"
        else:  # e.g. "the following arguments are required: verb"
            message += f" ('{self.prog} --help' lists them)"
        raise FlagError(self.prog, message)


class Store(argparse.Action):
    """argparse's ``store`` that also records the flag as given (:func:`values.given`), so a
    verb can tell ``--model X`` from the default."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, values)
        if option_string is not None:
            namespace.__dict__.setdefault(v.GIVEN, set()).add(self.dest)


# Overridable per verb: what a verb may narrow (fetch's --task may be repeated: action append).
# The type is the flag's meaning and is never overridden.
OVERRIDABLE = {"default", "help", "metavar", "required", "action"}


def add(parser: argparse.ArgumentParser, *options: str, **overrides: Any) -> None:
    """Add ``options`` (keys of :data:`FLAGS`) to ``parser``; ``overrides`` (a default, the help,
    the metavar) apply to a single option."""
    if overrides and len(options) != 1:
        raise TypeError("overrides apply to one option at a time")
    wrong = set(overrides) - OVERRIDABLE
    if wrong:
        raise TypeError(f"{options[0]}: {sorted(wrong)} cannot be overridden")
    for option in options:
        spec = {**FLAGS[option], **overrides}
        if "type" in spec:
            spec["type"] = _named(option, spec["type"])
        if spec.get("action", "store") == "store" and option.startswith("-"):
            spec["action"] = Store
        parser.add_argument(option, **spec)  # the one add_argument call of the package


@functools.cache
def _named(option: str, parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """``parse`` whose error messages start with ``option`` (``--limit must be ...``); one
    function per option, so every verb's flag has the same type."""
    if parse in (str, Path):
        return parse

    def wrapped(text: str) -> Any:
        try:
            return parse(text)
        except argparse.ArgumentTypeError as e:
            raise argparse.ArgumentTypeError(f"{option} {e}") from None

    wrapped.__name__ = getattr(parse, "__name__", "value")
    return wrapped


def verb(
    sub,
    name: str,
    run: Callable[[argparse.Namespace], int],
    check: Callable[[argparse.Namespace], None] | None = None,
    **kwargs: Any,
) -> argparse.ArgumentParser:
    """The sub-parser of verb ``name``: its handler ``run(args) -> exit code`` and, optionally,
    ``check(args)``, the verb's own checks that :func:`layerfast.cli.main` runs before any model
    loads; ``kwargs`` (``help``, ``description``) as ``add_parser`` takes them."""
    p = sub.add_parser(name, **kwargs)
    p.set_defaults(run=run, check=check)
    return p


# --- groups a verb composes --------------------------------------------------------------------
# The model, where it runs and where results go: every verb that loads one.
MODEL = ("--model", "--trust-remote-code", "--dtype", "--device", "--out", "--no-progress")
# Its tokenizer and the CPU threads.
RUN = ("--tokenizer", "--threads")
# A model larger than one device (the verbs that load through common.load_model).
PLACEMENT = ("--device-map", "--max-memory", "--offload-folder")
# The task and which of its items.
TASK = ("--task", "--target-delimiter", "--limit", "--seed")
HARNESS = ("--include-path", "--num-fewshot")  # --task lm_eval:<name>, and eval
SIZING = ("--batch-tokens", "--memory-budget", "--stack-tokens")
WORKERS = ("--workers", "--ray-address", "--gpus-per-worker")
# Every verb that builds a Game (ablate, shapley, report, prune, eavss).
SWEEP = (
    *MODEL,
    "--revision",
    *PLACEMENT,
    *TASK,
    *HARNESS,
    "--utility",
    "--cache",
    *SIZING,
    *WORKERS,
    "--max-length",
)
PLAYERS = ("--unit", "--players")  # the verbs that only sweep
STATS = ("--texts", "--stats-dtype", "--n-texts", "--eps", "--relative", "--backend")
