"""layerfast.errors: the error types the CLI turns into exit 2, and warnings that point at the
user's own line rather than at library internals."""

from __future__ import annotations

import warnings

import pytest

from layerfast.errors import LayerfastError, LayerfastWarning, UsageError, warn
from layerfast.estimators import shapley
from layerfast.estimators.games import random_game


def test_usage_error_is_both_ours_and_a_value_error():
    assert issubclass(UsageError, LayerfastError) and issubclass(UsageError, ValueError)


def test_warn_from_a_caller_outside_the_package_points_at_it():
    with pytest.warns(LayerfastWarning) as record:
        warn("something degraded")
    assert record[0].filename == __file__


def test_a_warning_raised_deep_in_the_library_points_at_the_users_line():
    game = random_game(6, seed=0)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        shapley(game, method="permutation", budget=12, seed=0)  # one pair: no error bar
    ours = [w for w in record if issubclass(w.category, LayerfastWarning)]
    assert len(ours) == 1 and ours[0].filename == __file__, [(w.filename, w.lineno) for w in ours]
