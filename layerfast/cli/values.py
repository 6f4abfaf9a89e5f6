"""Every flag value turned into what the library takes, in one module.

* The argparse ``type=`` functions (:data:`layerfast.cli.flag_table.FLAGS` names them): one
  flag's text -> its value, checked at parse time, so a number out of range, a malformed size,
  list or address fails before anything else runs. Each raises
  :class:`argparse.ArgumentTypeError` with a message that shows the value ("must be an
  integer >= 1, got 0"); :func:`layerfast.cli.flags.add` puts the flag in front of it.
  ``"auto"`` becomes None, which every library call takes as auto.
* The readers of parsed flags (several flags, or a file): :func:`placement`,
  :func:`driver_placement`, :func:`n_workers`, :func:`cache_path`, :func:`given`,
  ...

Light on purpose: ``layerfast --help`` imports this module, so neither torch nor transformers
may be imported at its top.
"""

from __future__ import annotations

import argparse
import json
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import UsageError

AUTO = "auto"
GIVEN = "given_flags"  # the namespace attribute of the flags given on the command line
Bad = argparse.ArgumentTypeError


# --- numbers -------------------------------------------------------------------------------------
def integer(lo: int) -> Callable[[str], int]:
    """``type=``: a whole number >= ``lo``."""

    def parse(text: str) -> int:
        try:
            n = int(text)
        except ValueError:
            raise Bad(f"must be an integer >= {lo}, got {text!r}") from None
        if n < lo:
            raise Bad(f"must be an integer >= {lo}, got {n}")
        return n

    parse.__name__ = f"integer_at_least_{lo}"
    return parse


def number(test: Callable[[float], bool], what: str) -> Callable[[str], float]:
    """``type=``: a finite number that passes ``test`` (``what`` says which, e.g. "> 0")."""

    def parse(text: str) -> float:
        try:
            x = float(text)
        except ValueError:
            raise Bad(f"must be a number {what}, got {text!r}") from None
        if not (math.isfinite(x) and test(x)):
            raise Bad(f"must be a number {what}, got {x}")
        return x

    parse.__name__ = "number"
    return parse


positive = number(lambda x: x > 0, "> 0")
non_negative = number(lambda x: x >= 0, ">= 0")
fraction = number(lambda x: 0 <= x < 1, "in [0, 1)")


def item_bootstrap(text: str) -> int:
    """``--item-bootstrap``: 0 (off) or at least 2 resamples."""
    try:
        n = int(text)
    except ValueError:
        n = -1
    if n != 0 and n < 2:
        raise Bad(f"must be 0 (off) or a whole number >= 2, got {text!r}")
    return n


def auto_or_count(text: str) -> int | None:
    """``--threads``, ``--batch-tokens``: None for ``auto``, else an integer >= 1."""
    if text.strip().lower() == AUTO:
        return None
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise Bad(f"must be 'auto' or an integer >= 1, got {text!r}")
    return n


# --- byte sizes ----------------------------------------------------------------------------------
# unit -> bytes; IEC (KiB, MiB, ...) powers of 1024, SI (kB, MB, ...) powers of 1000
BYTE_UNITS = {
    "b": 1,
    **{f"{p}ib": 1024 ** (i + 1) for i, p in enumerate("kmgt")},
    **{f"{p}b": 1000 ** (i + 1) for i, p in enumerate("kmgt")},
}
_BYTES = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-z]*)\s*", re.IGNORECASE)
SIZE_EXAMPLES = "a size such as 512MiB, 4GiB or a number of bytes"


def size_in_bytes(text: str) -> int | None:
    """A whole number of bytes, or a number with a unit (B, KiB, MiB, GiB, TiB; kB, MB, GB,
    TB), any case, rounded down to a byte; None when ``text`` is not a size."""
    match = _BYTES.fullmatch(str(text))
    unit = BYTE_UNITS.get(match.group(2).lower() or "b") if match else None
    return None if unit is None else math.floor(float(match.group(1)) * unit)


def size(text: str) -> int:
    """``type=``: a size in bytes (:func:`size_in_bytes`)."""
    n = size_in_bytes(text)
    if n is None:
        raise Bad(f"expects {SIZE_EXAMPLES}; got {text!r}")
    return n


def byte_size(flag: str, text: str) -> int:
    """A size in bytes from ``flag``'s value (for scripts with their own flags, e.g.
    ``benchmarks/bench_block_stats.py --bytes``); a UsageError naming ``flag`` otherwise."""
    try:
        return size(text)
    except Bad as e:
        raise UsageError(f"{flag} {e}") from None


def kernel_bytes(text: str) -> int:
    """``--kernel-bytes``: a size of at least 1 MiB."""
    n = size(text)
    if n < 1 << 20:
        raise Bad(f"must be at least 1MiB, got {text!r}")
    return n


def auto_or_bytes(text: str) -> int | None:
    """``--memory-budget``: None for ``auto``, else a size in bytes."""
    if text.strip().lower() == AUTO:
        return None
    n = size_in_bytes(text)
    if n is None:
        raise Bad(f"expects {SIZE_EXAMPLES}, or 'auto'; got {text!r}")
    return n


def auto_or_whole(text: str) -> int | None:
    """``--stack-tokens``: None for ``auto``, else an integer >= 0."""
    if text.strip().lower() == AUTO:
        return None
    if not text.strip().isdigit():
        raise Bad(f"must be 'auto' or an integer >= 0, got {text!r}")
    return int(text)


def max_memory(text: str) -> dict[int | str, int]:
    """``--max-memory 0=70GiB,cpu=200GiB`` -> {0: bytes, "cpu": bytes} (accelerate's
    ``max_memory``; a device index as an int)."""
    limits: dict[int | str, int] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        dev, sep, size = (s.strip() for s in part.partition("="))
        if not sep or not dev or not size:
            raise Bad(f"expects DEVICE=SIZE pairs such as 0=70GiB,cpu=200GiB, got {text!r}")
        n = size_in_bytes(size)
        if n is None:
            raise Bad(
                f"expects DEVICE=SIZE pairs such as 0=70GiB,cpu=200GiB, got {text!r}: {size!r} "
                f"is not {SIZE_EXAMPLES}"
            )
        limits[int(dev) if dev.isdigit() else dev] = n
    if not limits:
        raise Bad(f"expects DEVICE=SIZE pairs such as 0=70GiB,cpu=200GiB, got {text!r}")
    return limits


# --- lists, names, pairs -------------------------------------------------------------------------
def _numbers(text: str, cast: type) -> list:
    try:
        return [cast(x) for x in text.split(",")]
    except ValueError:
        raise Bad(f"expects comma-separated numbers, got {text!r}") from None


def budgets(text: str) -> list[int]:
    """``--budgets 100,200,400``: integers >= 1."""
    values = _numbers(text, int)
    if any(b < 1 for b in values):
        raise Bad(f"must be comma-separated integers >= 1, got {text!r}")
    return values


def split(text: str) -> list[float]:
    """``--split train,val,test``: three positive fractions summing to 1."""
    f = _numbers(text, float)
    if len(f) != 3 or not all(math.isfinite(x) and x > 0 for x in f) or abs(sum(f) - 1) > 1e-9:
        raise Bad(f"must be three positive fractions summing to 1 (train,val,test), got {text!r}")
    return f


def names(text: str) -> list[str]:
    """``--models``, ``--tasks`` (report): comma-separated names, none empty or repeated."""
    found = [n.strip() for n in text.split(",")]
    if any(not n for n in found):
        raise Bad(f"expects comma-separated names, got {text!r}")
    dup = sorted({n for n in found if found.count(n) > 1})
    if dup:
        raise Bad(f"names {', '.join(dup)} twice")
    return found


BENCH_STEPS = ("kernels", "overhead", "sweep", "stacking")


def bench_steps(text: str) -> tuple[str, ...]:
    """``--only``: a comma-separated subset of :data:`BENCH_STEPS`."""
    steps = tuple(s.strip() for s in text.split(",") if s.strip())
    if not steps or any(s not in BENCH_STEPS for s in steps):
        raise Bad(f"must be a comma-separated subset of {','.join(BENCH_STEPS)}, got {text!r}")
    return steps


_OPTION_WORDS = {"true": True, "false": False, "none": None}


def option_value(text: str) -> Any:
    """An estimator option's value: int, float, True/False/None, else the string."""
    if text.strip().lower() in _OPTION_WORDS:
        return _OPTION_WORDS[text.strip().lower()]
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            continue
    return text


def key_value(text: str) -> tuple[str, Any]:
    """``--option KEY=VALUE`` -> (key, typed value)."""
    key, eq, value = text.partition("=")
    if not eq or not key.strip():
        raise Bad(f"expects KEY=VALUE, got {text!r}")
    return key.strip(), option_value(value)


ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\"}


def delimiter(text: str) -> str:
    """``--target-delimiter``: the string with ``\\n``, ``\\t``, ``\\r`` and ``\\\\`` decoded."""
    parts = re.split(r"(\\.?)", text, flags=re.S)
    bad = [p for p in parts[1::2] if p[1:] not in ESCAPES]
    if bad:
        what = f"unknown escape {bad[0]}" if len(bad[0]) == 2 else "a lone \\ at the end"
        raise Bad(f"{text!r}: {what} (known: \\n, \\t, \\r, \\\\)")
    return "".join(p if k % 2 == 0 else ESCAPES[p[1:]] for k, p in enumerate(parts))


def ray_address(text: str) -> str:
    """``--ray-address``: ``auto``, ``host:port`` or ``ray://host:port``."""
    value = text.strip()
    if value == AUTO:
        return AUTO
    host, _, port = value.removeprefix("ray://").rpartition(":")
    if not host or re.search(r"[\s/]", host) or not port.isdigit() or not 0 < int(port) < 65536:
        raise Bad(f"expects host:port, ray://host:port or auto, got {text!r}")
    return value


def _library_name(check: Callable[[str], Any], extra: str = "") -> Callable[[str], str]:
    """``type=`` for a name a library function checks (lazily imported: it may need torch)."""

    def parse(text: str) -> str:
        try:
            check(text)
        except UsageError as e:
            raise Bad(f"{text!r}: {e}{extra}") from None
        return text

    parse.__name__ = "name"
    return parse


def registry_name(module: str, name: str) -> Callable[[str], str]:
    """``type=``: one of the names in the registry ``module.name``, imported when a value is
    parsed (not for --help: the statistics backends' module imports torch)."""

    def parse(text: str) -> str:
        import importlib

        known = getattr(importlib.import_module(module), name)
        if text not in known:
            raise Bad(f"must be one of {', '.join(known)}, got {text!r}")
        return text

    parse.__name__ = name.lower()
    return parse


def _dtype(text: str) -> None:
    from ..models.loading import parse_dtype

    parse_dtype(text)


dtype = _library_name(_dtype)


def stats_dtype(text: str) -> str:
    """``--stats-dtype``: a dtype name or ``model`` (the model's own)."""
    if text.strip().lower() == "model":
        return "model"
    return _library_name(_dtype, " or 'model'")(text)


# --- readers of the parsed flags -----------------------------------------------------------------
def given(args: argparse.Namespace, dest: str) -> bool:
    """Whether the flag of ``dest`` was on the command line (not just its default)."""
    return dest in getattr(args, GIVEN, ())


def n_workers(args: argparse.Namespace) -> int:
    """``--workers`` (1 for a verb without the flag)."""
    return getattr(args, "workers", None) or 1


def threads(args: argparse.Namespace) -> int | None:
    """``--threads``: None for ``auto`` (or a verb without the flag), else the count."""
    return getattr(args, "threads", None)


def batch_tokens(args: argparse.Namespace) -> int | None:
    """``--batch-tokens``: None for ``auto`` (or a verb without the flag), else the count."""
    return getattr(args, "batch_tokens", None)


def memory_budget(args: argparse.Namespace) -> int | None:
    """``--memory-budget``: None for ``auto`` (or a verb without the flag), else bytes."""
    return getattr(args, "memory_budget", None)


def cache_path(args: argparse.Namespace) -> Path:
    """The SQLite file of evaluated coalitions: ``--cache``, else ``OUT/utilities.sqlite``."""
    return getattr(args, "cache", None) or args.out / "utilities.sqlite"


def task_options(args: argparse.Namespace, spec: str) -> dict[str, Any]:
    """``tasks.load`` keywords for task ``spec`` from the task flags: ``--limit``, ``--seed``,
    ``--target-delimiter``, and for an lm_eval: task ``--include-path`` and ``--num-fewshot``
    (a report over several tasks gives them to its harness tasks only)."""
    from ..tasks.kinds import LM_EVAL, kind

    options = {
        "limit": args.limit,
        "seed": args.seed,
        "delimiter": getattr(args, "target_delimiter", None),
    }
    if kind(spec) == LM_EVAL:
        options["include_path"] = getattr(args, "include_path", None)
        options["num_fewshot"] = getattr(args, "num_fewshot", None)
    return options


SWEEP_ONLY = ("ablate", "shapley", "report")  # verbs whose driver never runs the model


def driver_placement(args: argparse.Namespace) -> dict[str, Any]:
    """Where this process keeps its copy of the model when ``--workers`` run it: left on disk
    (``device_map={"": "disk"}``: no weights in memory; the tokenizer, config and fingerprint
    are all it reads) for the verbs that only sweep, else on the CPU (prune and eavss also run
    the model here)."""
    if getattr(args, "verb", None) in SWEEP_ONLY:
        return {"device_map": {"": "disk"}}
    return {"device": "cpu"}


def placement(args: argparse.Namespace) -> dict[str, Any]:
    """``--device-map`` (a name, or a JSON file of module -> device, read here),
    ``--max-memory`` and ``--offload-folder`` as ``lf.load`` keywords (only those given)."""
    out: dict[str, Any] = {}
    device_map = getattr(args, "device_map", None)
    if device_map is not None:
        path = Path(device_map)
        if path.suffix == ".json" or path.is_file():
            try:
                device_map = json.loads(path.read_text())
            except (OSError, ValueError) as e:
                raise UsageError(f"--device-map {path}: cannot read a JSON map: {e}") from None
            if not isinstance(device_map, dict):
                raise UsageError(
                    f"--device-map {path}: the JSON must be an object of name -> device"
                )
        out["device_map"] = device_map
    if getattr(args, "max_memory", None) is not None:
        out["max_memory"] = args.max_memory
    if getattr(args, "offload_folder", None) is not None:
        out["offload_folder"] = args.offload_folder
    return out
