"""Fixtures of the CLI tests: the tiny random Llama saved as a model folder and a 6-item task
file, once per test module (a module may override ``task_file``)."""

from __future__ import annotations

import pytest

from tests.cli.test_cli import save_tiny_model, write_task_file


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, model_factory, tiny_tokenizer_fixture):
    folder = tmp_path_factory.mktemp("model") / "tiny-llama"
    return save_tiny_model(folder, model_factory, tiny_tokenizer_fixture)


@pytest.fixture(scope="module")
def task_file(tmp_path_factory):
    return write_task_file(tmp_path_factory.mktemp("task") / "tiny6.jsonl")
