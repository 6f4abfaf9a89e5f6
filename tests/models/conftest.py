"""A tiny Llama saved as a Hugging Face folder (safetensors + tokenizer), and a way to copy it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.conftest import make_tiny_llama


@pytest.fixture(scope="module")
def saved_folder(tmp_path_factory, tiny_tokenizer_fixture) -> Path:
    """A tiny random 3-block Llama and its tokenizer, written with ``save_pretrained``."""
    model = make_tiny_llama(tiny_tokenizer_fixture)
    folder = tmp_path_factory.mktemp("models") / "tiny-llama"
    model.hf_model.save_pretrained(folder)
    tiny_tokenizer_fixture.save_pretrained(folder)
    return folder


@pytest.fixture
def model_copy(saved_folder, tmp_path):
    """``model_copy(name)`` -> a fresh copy of ``saved_folder`` under ``tmp_path`` to edit."""

    def copy(name: str = "model") -> Path:
        return Path(shutil.copytree(saved_folder, tmp_path / name))

    return copy
