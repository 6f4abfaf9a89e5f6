"""Command line: ``layerfast ablate | shapley | report | avss | prune | eavss | fetch | tasks |
bench | eval``.

Every sweep verb takes ``--model``, ``--task``, ``--limit``, ``--out DIR`` and writes JSON, CSV and
PNG files there. Evaluated coalitions are cached in ``DIR/utilities.sqlite`` (``--cache`` to move
it), so re-running an interrupted command resumes instead of starting again.

One module per job: ``parser`` (flags), ``values`` (flag values argparse cannot check), ``checks``
(every flag and path checked before any model loads), ``common`` (set-up shared by the verbs), and
the verbs by stage: ``sweeps``, ``statistics``, ``hallucination``, ``data``, ``bench``,
``eval`` (lm-evaluation-harness with the model ``layerfast``). A verb is
thin: it calls the library and hands results to :mod:`layerfast.report`. A user's mistake is a
:class:`~layerfast.errors.LayerfastError`: one line and exit 2; anything else keeps its traceback.
"""

from __future__ import annotations

import sys
import warnings

from .. import threads
from ..errors import LayerfastError, LayerfastWarning
from .bench import cmd_bench
from .checks import check_flags, check_paths
from .common import close_games
from .data import cmd_fetch, cmd_tasks
from .eval import cmd_eval
from .hallucination import cmd_eavss
from .parser import build_parser
from .statistics import cmd_avss, cmd_prune
from .sweeps import cmd_ablate, cmd_report, cmd_shapley

VERBS = {
    "ablate": cmd_ablate,
    "shapley": cmd_shapley,
    "report": cmd_report,
    "avss": cmd_avss,
    "prune": cmd_prune,
    "eavss": cmd_eavss,
    "fetch": cmd_fetch,
    "tasks": cmd_tasks,
    "bench": cmd_bench,
    "eval": cmd_eval,
}

__all__ = ["VERBS", "build_parser", "main"]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.argv = argv  # recorded in the output files as the command that made them
    try:
        check_flags(args)  # cheap checks first: no model loads for a bad flag or path
        check_paths(args)
        with warnings.catch_warnings():
            warnings.showwarning = _one_line(args.verb, warnings.showwarning)
            return VERBS[args.verb](args)
    except LayerfastError as e:  # the user's input; anything else is a bug and keeps its traceback
        print(f"layerfast {args.verb}: error: {e}", file=sys.stderr)
        return 2
    finally:
        close_games()  # stop --workers' Ray actors
        threads.restore()  # an in-process caller keeps its own torch thread count


def _one_line(verb: str, show):
    """Print the library's own warnings as ``layerfast VERB: warning: ...``; others as usual."""

    def showwarning(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, LayerfastWarning):
            print(f"layerfast {verb}: warning: {message}", file=sys.stderr)
        else:
            show(message, category, filename, lineno, file, line)

    return showwarning
