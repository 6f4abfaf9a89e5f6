"""The tree is ruff-clean: lint rules (E, F, I, B, W, UP; pyproject.toml) and the formatter.

ruff comes with the ``test`` extra, so CI runs this on every submission; a missing ruff fails
here rather than skipping, so the lint step cannot silently vanish.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "args", [["check", "--no-cache", "."], ["format", "--check", "--no-cache", "."]]
)
def test_ruff(args):
    proc = subprocess.run(
        [sys.executable, "-m", "ruff", *args], cwd=ROOT, capture_output=True, text=True
    )
    assert proc.returncode == 0, f"ruff {' '.join(args)} failed:\n{proc.stdout}{proc.stderr}"
