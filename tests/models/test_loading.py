"""lf.load's input errors: each is a UsageError naming the value."""

from __future__ import annotations

import pytest
import torch

import layerfast as lf
from layerfast.errors import UsageError
from layerfast.models import parse_dtype


def test_parse_dtype():
    assert parse_dtype("BF16") is torch.bfloat16
    assert parse_dtype(torch.float16) is torch.float16
    assert parse_dtype(None) is None
    with pytest.raises(UsageError, match="unknown dtype 'int3'.*bf16"):
        parse_dtype("int3")


def test_unknown_model_name():
    with pytest.raises(UsageError, match="'no-such-model' is neither a local model folder"):
        lf.load("no-such-model")


def test_folder_without_config(tmp_path):
    with pytest.raises(UsageError, match="has no config.json"):
        lf.load(tmp_path)
