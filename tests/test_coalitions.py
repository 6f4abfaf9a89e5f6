"""layerfast.coalitions: the one rule set for keep-masks and the one coalition key encoding."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from layerfast.coalitions import as_mask, as_masks, coalition_key, coalition_keys, masks_from_keys
from layerfast.errors import UsageError

N = 4
PLAYERS = ["attn0", "mlp0", "attn1", "mlp1"]


@pytest.mark.parametrize(
    "masks",
    [
        np.array([[True, False, True, True]]),
        np.array([[1, 0, 1, 1]]),
        np.array([[1, 0, 1, 1]], dtype=np.uint8),
        np.array([[1.0, 0.0, 1.0, 1.0]]),
        [[True, False, True, True]],
        [[1, 0, 1, 1]],
    ],
)
def test_bool_and_zero_one_forms_agree(masks):
    out = as_masks(masks, N)
    assert out.dtype == np.bool_ and out.shape == (1, N)
    np.testing.assert_array_equal(out, [[True, False, True, True]])


def test_bool_input_is_not_copied():
    masks = np.ones((3, N), dtype=bool)
    assert as_masks(masks, N) is masks


def test_one_dimensional_is_one_mask():
    out = as_masks([True, False, False, True], N)
    assert out.shape == (1, N)
    assert as_masks(np.zeros((0, N), dtype=bool), N).shape == (0, N)


@pytest.mark.parametrize(
    "bad",
    [
        np.ones((2, N - 1), bool),
        np.ones((2, N + 1), bool),
        np.ones(N + 2, bool),
        np.ones((1, 2, N), bool),
        np.ones((N, 1), bool),
        np.bool_(True),
        [],
    ],
)
def test_wrong_shape_names_width_players_and_shape(bad):
    with pytest.raises(UsageError, match=rf"\[m, {N}\]") as info:
        as_masks(bad, N, players=PLAYERS)
    message = str(info.value)
    assert "attn0..mlp1" in message
    assert str(tuple(np.shape(bad))) in message


@pytest.mark.parametrize(
    "bad,culprit",
    [
        (np.full((1, N), 2), "2"),
        (np.array([[0, 1, -1, 1]]), "-1"),
        (np.full((2, N), 0.5), "0.5"),
        (np.array([[1.0, np.nan, 0.0, 1.0]]), "nan"),
        (np.array([["1"] * N]), "'1'"),
        (np.array([[None] * N]), "None"),
    ],
)
def test_values_other_than_zero_one_raise(bad, culprit):
    with pytest.raises(UsageError, match=rf"bool \[m, {N}\]") as info:
        as_masks(bad, N)
    assert culprit in str(info.value)


def test_usage_error_is_a_value_error():
    with pytest.raises(ValueError):
        as_masks(np.full((1, N), 2), N)


def test_ragged_input_raises_usage_error():
    with pytest.raises(UsageError, match="ragged"):
        as_masks([[True, False], [True]], 2)


def test_as_mask_requires_exactly_one_dimension():
    np.testing.assert_array_equal(as_mask([1, 0, 1, 1], N), [True, False, True, True])
    for bad in ([[True] * N], [True] * (N - 1), []):
        with pytest.raises(UsageError, match=f"length {N}") as info:
            as_mask(bad, N, players=PLAYERS, name="keep")
        assert str(info.value).startswith("keep must")
    with pytest.raises(UsageError, match="bool"):
        as_mask([1, 2, 1, 1], N)
    with pytest.raises(UsageError, match="bool"):
        as_mask([1.0, float("nan"), 1.0, 1.0], N)


def test_key_encoding_is_zero_one_string_in_player_order():
    assert coalition_key(np.array([True, False, True])) == "101"
    assert coalition_keys(np.array([[True, False], [False, False]])) == ["10", "00"]
    assert coalition_keys(np.zeros((0, 3), dtype=bool)) == []


def test_keys_round_trip_and_are_unique():
    n = 6
    masks = np.array(list(itertools.product([False, True], repeat=n)))  # all 2^n coalitions
    keys = coalition_keys(masks)
    assert len(set(keys)) == len(keys) == 2**n
    assert keys == [coalition_key(m) for m in masks]
    np.testing.assert_array_equal(masks_from_keys(keys, n), masks)
    assert masks_from_keys([], n).shape == (0, n)


@pytest.mark.parametrize("bad", [["10"], ["1012"], ["1x1"]])
def test_malformed_keys_raise(bad):
    with pytest.raises(UsageError, match="length 3"):
        masks_from_keys(bad, 3)
