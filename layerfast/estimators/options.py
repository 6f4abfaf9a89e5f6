"""Validation of the options and budgets a user passes to an estimator.

Every failure is a :class:`layerfast.errors.UsageError` naming the option and the value. An
unknown option name or a budget of the wrong type raises :class:`OptionTypeError`, which is
also a ``TypeError``, as Python raises for an unexpected keyword argument.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any

import numpy as np

from ..errors import UsageError

__all__ = ["OptionTypeError", "check_option_names", "check_int_option", "check_budget_value"]


class OptionTypeError(UsageError, TypeError):
    """An option the method does not have, or a budget that is not an integer."""


def check_option_names(method: str, given: Iterable[str], valid: Iterable[str]) -> None:
    """Refuse option names not in ``valid``, suggesting the closest valid name."""
    valid = sorted(valid)
    unknown = [k for k in given if k not in valid]
    if not unknown:
        return
    hints = []
    for k in unknown:
        close = difflib.get_close_matches(k, valid, n=1)
        hints.append(f"{k!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    raise OptionTypeError(
        f"unknown option(s) for method {method!r}: {', '.join(hints)}; "
        f"valid options: {valid if valid else 'none'}"
    )


def check_int_option(name: str, value: Any, minimum: int, allow_none: bool = False) -> None:
    """Refuse ``value`` unless it is an integer >= ``minimum`` (or None, if allowed)."""
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise UsageError(f"option {name} must be an integer >= {minimum}, got {value!r}")


def check_budget_value(budget: Any) -> int | None:
    """The budget (number of distinct coalitions) as an int > 0, or None for the default.

    Integral floats (``1e3``) are accepted.
    """
    if budget is None:
        return None
    if isinstance(budget, bool) or not isinstance(budget, (int, np.integer)):
        if isinstance(budget, float) and budget.is_integer():
            budget = int(budget)
        else:
            raise OptionTypeError(f"budget must be a positive integer or None, got {budget!r}")
    budget = int(budget)
    if budget <= 0:
        raise UsageError(f"budget must be a positive integer (number of evaluations), got {budget}")
    return budget
