"""Command line: ``layerfast ablate | shapley | report | avss | prune | eavss | fetch | tasks |
bench | eval``.

Every sweep verb takes ``--model``, ``--task``, ``--limit``, ``--out DIR`` and writes JSON, CSV and
PNG files there. Evaluated coalitions are cached in ``DIR/utilities.sqlite`` (``--cache`` to move
it), so re-running an interrupted command resumes instead of starting again.

One module per job: ``flag_table`` (every flag declared once) and ``flags`` (``add``: a verb
composes its flags; the parser class), ``values`` (every flag value read: the ``type=`` functions
that check a value at parse time, and the readers of several flags), ``checks`` (what needs
several flags, a file or the task's kind, before any model loads), ``model_specs`` (a model name
found without loading it), ``common`` (set-up shared by the verbs), ``parser`` (the top parser
built from the verb modules) and the verbs by stage, each registering its own sub-parser:
``sweeps`` (+ ``multi_report``), ``statistics``, ``hallucination``, ``data``, ``bench``, ``eval``
(lm-evaluation-harness with the model ``layerfast``). A verb is thin: it calls the library and
hands results to :mod:`layerfast.report`. A user's mistake is a
:class:`~layerfast.errors.LayerfastError`: one line and exit 2; Ctrl-C is one line and exit 130;
anything else keeps its traceback.
"""

from __future__ import annotations

import sys
import warnings

from .. import threads
from ..errors import LayerfastError, LayerfastWarning
from ..progress import bars_hidden
from .checks import check_flags, check_paths
from .common import close_games, interrupted
from .flags import FlagError
from .parser import build_parser, verbs

VERBS = verbs()  # verb name -> handler

__all__ = ["VERBS", "FlagError", "build_parser", "main"]

EXIT_USAGE, EXIT_INTERRUPTED = 2, 130  # 130 = 128 + SIGINT, as a shell reports Ctrl-C


def main(argv: list[str] | None = None) -> int:
    """``layerfast ARGV``: parse, check every flag and path, run the verb; returns the exit code
    (0, 2 for a user's mistake, 130 for Ctrl-C)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = None
    try:
        args = build_parser().parse_args(argv)
        args.argv = argv  # recorded in the output files as the command that made them
        check_flags(args)  # cheap checks first: no model loads for a bad flag or path
        if args.check is not None:
            args.check(args)  # the verb's own
        check_paths(args)
        # --no-progress hides the bars; a step longer than a minute still prints a heartbeat
        with warnings.catch_warnings(), bars_hidden(bool(getattr(args, "no_progress", False))):
            warnings.showwarning = _one_line(args.verb, warnings.showwarning)
            return args.run(args)
    except FlagError as e:  # argparse's: the flag and the value
        print(f"{e.prog}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except LayerfastError as e:  # the user's input; anything else is a bug and keeps its traceback
        print(f"layerfast {args.verb}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:  # what was kept and how to resume, not a traceback
        print(interrupted(args), file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    finally:
        close_games()  # stop --workers' Ray actors (also on Ctrl-C)
        threads.restore()  # an in-process caller keeps its own torch thread count


def _one_line(verb: str, show):
    """Print the library's own warnings as ``layerfast VERB: warning: ...``; others as usual."""

    def showwarning(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, LayerfastWarning):
            print(f"layerfast {verb}: warning: {message}", file=sys.stderr)
        else:
            show(message, category, filename, lineno, file, line)

    return showwarning
