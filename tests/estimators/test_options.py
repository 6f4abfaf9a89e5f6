"""Error types of the estimators, the registry, and the layout of the split modules."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import layerfast.estimators as est
from layerfast.errors import LayerfastError, UsageError
from layerfast.estimators import ESTIMATORS, BudgetedGame, BudgetExceeded, get_estimator, shapley
from layerfast.estimators.games import AdditiveGame, random_game
from layerfast.estimators.options import OptionTypeError, check_budget_value, check_int_option


def test_budget_exceeded_is_a_layerfast_and_runtime_error():
    assert issubclass(BudgetExceeded, LayerfastError) and issubclass(BudgetExceeded, RuntimeError)
    g = BudgetedGame(AdditiveGame([1.0, 2.0]), budget=1)
    g(np.ones(2, dtype=bool))
    with pytest.raises(BudgetExceeded):
        g(np.zeros(2, dtype=bool))


@pytest.mark.parametrize(
    "call",
    [
        lambda: shapley(random_game(4), method="permutation", chnk=3),
        lambda: shapley(random_game(4), method="kernel", budget=12.5),
        lambda: shapley(random_game(4), method="kernel", budget=True),
    ],
)
def test_option_names_and_budget_types_raise_option_type_error(call):
    with pytest.raises(OptionTypeError) as info:
        call()
    assert isinstance(info.value, UsageError) and isinstance(info.value, TypeError)


@pytest.mark.parametrize(
    "call",
    [
        lambda: shapley(random_game(4), method="montecarlo"),
        lambda: shapley(random_game(4), method="proximity", window=0),
        lambda: shapley(random_game(4), method="proximity", window=2, budget=3),
        lambda: shapley(random_game(4), method="permutation", budget=0),
        lambda: shapley(random_game(4), method="exact", budget=10),
        lambda: shapley(random_game(4), method="truncated"),  # no chance level
        lambda: shapley(random_game(4), method="truncated", chance=0.0, tolerance=-1),
        lambda: shapley(random_game(4), eval_empty="yes"),
        lambda: shapley(AdditiveGame(np.ones(21)), method="exact"),
    ],
)
def test_user_errors_are_usage_errors(call):
    with pytest.raises(UsageError):
        call()


def test_option_helpers():
    assert check_budget_value(None) is None
    assert check_budget_value(1e3) == 1000
    check_int_option("chunk", None, 1, allow_none=True)
    with pytest.raises(UsageError, match="option chunk must be an integer >= 1, got 0"):
        check_int_option("chunk", 0, 1)


def test_bad_masks_reaching_the_budgeted_game_are_usage_errors():
    g = BudgetedGame(AdditiveGame([1.0, 2.0, 3.0]))
    with pytest.raises(UsageError, match=r"\[m, 3\]"):
        g(np.ones((1, 4), dtype=bool))
    with pytest.raises(UsageError, match="values such as"):
        g(np.full((1, 3), 2))
    assert g.keys([[1, 0, 1]]) == ["101"]


def test_registry_is_the_one_list_of_methods():
    assert sorted(ESTIMATORS) == [
        "exact",
        "kernel",
        "kernel_ht",
        "permutation",
        "proximity",
        "truncated",
    ]
    for name, cls in ESTIMATORS.items():
        assert cls.name == name
        assert type(get_estimator(name)) is cls


def test_package_exports_come_from_the_split_modules():
    from layerfast.estimators import budget, estimator, options, registry, result

    assert est.ShapleyResult is result.ShapleyResult
    assert est.BudgetedGame is budget.BudgetedGame and est.BudgetExceeded is budget.BudgetExceeded
    assert est.Estimator is estimator.Estimator
    assert est.ESTIMATORS is registry.ESTIMATORS and est.get_estimator is registry.get_estimator
    assert est.check_budget_value is options.check_budget_value


def test_estimators_import_only_numpy():
    code = (
        "import sys, layerfast.estimators, layerfast.estimators.ablation, "
        "layerfast.estimators.convergence, layerfast.estimators.games, layerfast.estimators.ranks\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers', 'scipy') "
        "or m.startswith(('layerfast.models', 'layerfast.evaluation', 'layerfast.activations', "
        "'layerfast.report', 'layerfast.hallucination', 'layerfast.tasks'))]\n"
        "print(bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
