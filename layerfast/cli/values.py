"""Flag values that argparse cannot check by type alone; errors name the flag."""

from __future__ import annotations

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
