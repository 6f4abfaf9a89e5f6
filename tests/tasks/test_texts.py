"""Calibration text files: UTF-8 (a byte-order mark is fine), errors name the file and line."""

from __future__ import annotations

import pytest

from layerfast.errors import UsageError
from layerfast.tasks.texts import calibration_texts


def test_text_file_documents(tmp_path):
    path = tmp_path / "docs.txt"
    path.write_bytes("\ufeffthe first\n\n  the second  \nthe third\n".encode())
    assert calibration_texts(str(path), 2) == ["the first", "the second"]


def test_text_file_not_utf8(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("one\ntwo caf\xe9\n".encode("latin-1"))
    with pytest.raises(UsageError) as err:
        calibration_texts(str(path), 5)
    assert f"{path}:2" in str(err.value) and "not UTF-8" in str(err.value)


def test_text_file_missing(tmp_path):
    with pytest.raises(UsageError, match="nothing.txt"):
        calibration_texts(str(tmp_path / "nothing.txt"), 5)
