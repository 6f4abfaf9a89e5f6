"""Flag values that argparse cannot check by type alone; errors name the flag."""

from __future__ import annotations

import math
import re
from typing import Any

from ..errors import UsageError

_OPTION_WORDS = {"true": True, "false": False, "none": None}


def parse_options(pairs: list[str]) -> dict:
    """KEY=VALUE pairs -> dict; values become int, float, True/False/None or stay strings."""
    options = {}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not eq:
            raise UsageError(f"--option expects KEY=VALUE, got {pair!r}")
        options[key.strip()] = option_value(value)
    return options


def option_value(text: str) -> Any:
    if text.strip().lower() in _OPTION_WORDS:
        return _OPTION_WORDS[text.strip().lower()]
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            continue
    return text


def numbers(flag: str, text: str, cast: type) -> list:
    """A comma-separated list of ``cast`` numbers from ``flag``'s value."""
    try:
        return [cast(x) for x in text.split(",")]
    except ValueError:
        raise UsageError(f"{flag} expects comma-separated numbers, got {text!r}") from None


# unit -> bytes; IEC (KiB, MiB, ...) powers of 1024, SI (kB, MB, ...) powers of 1000
BYTE_UNITS = {
    "b": 1,
    **{f"{p}ib": 1024 ** (i + 1) for i, p in enumerate("kmgt")},
    **{f"{p}b": 1000 ** (i + 1) for i, p in enumerate("kmgt")},
}
_BYTES = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-z]*)\s*", re.IGNORECASE)


def byte_size(flag: str, text: str) -> int:
    """A size in bytes from ``flag``'s value: a whole number of bytes, or a number with a unit
    (B, KiB, MiB, GiB, TiB; kB, MB, GB, TB), any case; a fraction is rounded down to a byte."""
    match = _BYTES.fullmatch(str(text))
    unit = BYTE_UNITS.get(match.group(2).lower() or "b") if match else None
    if unit is None:
        raise UsageError(
            f"{flag} expects a size such as 512MiB, 4GiB or a number of bytes, or 'auto'; "
            f"got {text!r}"
        )
    return math.floor(float(match.group(1)) * unit)
