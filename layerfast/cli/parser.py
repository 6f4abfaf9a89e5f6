"""The top parser: ``layerfast VERB ...``, one sub-parser per verb, each added by its verb
module's ``register(sub)`` from the flag declarations of :mod:`layerfast.cli.flags`."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from . import bench, data, hallucination, statistics, sweeps
from . import eval as eval_verb
from .flags import Parser

# The verb modules in the order their verbs are listed by ``layerfast --help``.
VERB_MODULES = (sweeps, statistics, hallucination, data, bench, eval_verb)


def build_parser() -> Parser:
    """``layerfast``'s parser: every verb's sub-parser; a verb's handler is ``args.run`` and its
    own checks ``args.check`` (or None)."""
    parser = Parser(
        prog="layerfast",
        description="Fast, exact layer-importance analysis of transformer language models.",
        epilog="'layerfast VERB --help' lists a verb's flags.",
    )
    sub = parser.add_subparsers(dest="verb", required=True)
    for module in VERB_MODULES:
        module.register(sub)
    parser.verb_parsers = dict(sub.choices)
    return parser


def verbs() -> dict[str, Callable[[argparse.Namespace], int]]:
    """Verb name -> handler, in the order of ``--help``."""
    return {name: p.get_default("run") for name, p in build_parser().verb_parsers.items()}
