"""Checks on output paths that several stages share (the CLI's ``--out``, model saves), and
:func:`atomic_write`, through which every output file (JSON, CSV, Markdown, HTML, PNG, SVG) is
written: to a temporary name in the same folder, renamed into place only once complete, so a
failed write (disk full, quota, read-only file system) leaves the old file or none, never a
truncated one, and raises one :class:`~layerfast.errors.OutputError` naming the path and why.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .errors import OutputError, UsageError

# what to do about an errno, after the system's own words
_ADVICE = {
    errno.ENOSPC: "free some space or write elsewhere",
    errno.EDQUOT: "free some space within your quota or write elsewhere",
    errno.EROFS: "write elsewhere",
    errno.EACCES: "check its permissions or write elsewhere",
    errno.EPERM: "check its permissions or write elsewhere",
}


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


def reason(error: OSError) -> str:
    """The system's words for ``error`` (e.g. "No space left on device"), with what to do
    about the common causes of a failed write."""
    text = error.strerror or str(error) or type(error).__name__
    advice = _ADVICE.get(error.errno or 0)
    return f"{text}; {advice}" if advice else text


def write_error(path: str | Path, error: OSError) -> OutputError:
    """The one-line :class:`~layerfast.errors.OutputError` for a failed write of ``path``."""
    return OutputError(f"cannot write {path}: {reason(error)}", errno=error.errno)


@contextlib.contextmanager
def atomic_write(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (same folder, same suffix, so matplotlib picks
    the same format) to write the whole file to; on success it is renamed onto ``path`` (an
    atomic replace), with the permissions a new file gets (or the old file's). On any error the
    temporary file is removed and ``path`` is left as it was; an ``OSError`` (ENOSPC, EDQUOT,
    EROFS, EACCES, ...) becomes :func:`write_error`, one line naming ``path`` and the reason.
    """
    path = Path(path)
    try:
        fd, name = tempfile.mkstemp(
            prefix=f".{path.stem}.", suffix=f".part{path.suffix}", dir=path.parent
        )
    except OSError as e:
        raise write_error(path, e) from e
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, _mode(path))
        os.replace(tmp, path)
    except OSError as e:
        _remove(tmp)
        if isinstance(e, OutputError):
            raise
        raise write_error(path, e) from e
    except BaseException:
        _remove(tmp)
        raise


def write_text(path: str | Path, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` through :func:`atomic_write`; return ``path``."""
    with atomic_write(path) as tmp:
        with open(tmp, "w", encoding=encoding) as f:
            f.write(text)
    return Path(path)


def _remove(tmp: Path) -> None:
    with contextlib.suppress(OSError):
        tmp.unlink()


def _mode(path: Path) -> int:
    """The old file's permission bits, else those of a new file under the current umask
    (mkstemp makes its files 0600)."""
    try:
        return path.stat().st_mode & 0o7777
    except OSError:
        return 0o666 & ~_umask()


def _umask() -> int:
    try:  # Linux: read it without changing it (os.umask sets it for every thread)
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
