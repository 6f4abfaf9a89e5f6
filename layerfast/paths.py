"""Checks on output paths that several stages share (the CLI's ``--out``, model saves)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from .errors import UsageError


def check_writable_folder(path: Path, what: str) -> None:
    """``path`` (a folder, made later if missing) can be made and written in: its nearest
    existing ancestor is a folder where a file can be created. Creates nothing that stays;
    raises :class:`~layerfast.errors.UsageError` starting with ``what`` otherwise."""
    probe = Path(path).expanduser().absolute()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise UsageError(
            f"{what}: {probe} is a file, so the folder cannot be created (a file is not a folder)"
        )
    try:
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as e:
        raise UsageError(f"{what}: cannot write in {probe} ({e.strerror or e})") from None
