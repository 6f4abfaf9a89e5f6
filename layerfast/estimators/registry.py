"""The registry of estimators: method name -> class.

``ESTIMATORS`` is the one place a new estimator is added; ``shapley(method=...)``,
:func:`get_estimator` and the CLI's ``--method`` choices all read it.
"""

from __future__ import annotations

from typing import Any

from ..errors import UsageError
from .estimator import Estimator
from .exact import ExactEstimator
from .kernel import KernelEstimator
from .kernel_ht import KernelHTEstimator
from .permutation import PermutationEstimator
from .proximity import ProximityEstimator
from .truncated import TruncatedEstimator

__all__ = ["ESTIMATORS", "get_estimator"]

ESTIMATORS: dict[str, type[Estimator]] = {
    cls.name: cls
    for cls in (
        ExactEstimator,
        ProximityEstimator,
        PermutationEstimator,
        TruncatedEstimator,
        KernelEstimator,
        KernelHTEstimator,
    )
}


def get_estimator(method: str, **options: Any) -> Estimator:
    """Instantiate the estimator registered as ``method`` (options are validated).

    Raises:
        UsageError: an unknown method (the message lists ``ESTIMATORS``) or a bad option value.
        OptionTypeError: an option name the method does not have.
    """
    if not isinstance(method, str) or method not in ESTIMATORS:
        raise UsageError(f"unknown method {method!r}; choose one of {sorted(ESTIMATORS)}")
    return ESTIMATORS[method](**options)
