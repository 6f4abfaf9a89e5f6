"""The checks of a cache file, and SQLite's errors about one as one-line errors.

:func:`check_cache_file` runs before any work (the CLI's ``--cache``) and says what is wrong with
the file: a folder, not a regular file, not SQLite, corrupted (only when SQLite's own
``PRAGMA quick_check`` fails on a read-only open: a sound file is never called corrupted nor
advised to be deleted), or sound but not writable (the file, its folder, or the file system is
read-only). :func:`cache_error` turns SQLite's errors at open and at a write ("unable to open
database file", "attempt to write a readonly database", "database or disk is full", "file is
not a database") into the same kind of error, naming the path and the reason.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import tempfile
from pathlib import Path
from typing import Any

from ..errors import LayerfastError, OutputError, UsageError

SQLITE_HEADER = b"SQLite format 3\x00"  # the first 16 bytes of every SQLite database

# SQLite's primary result codes (https://sqlite.org/rescode.html) met at open and write
_PERM, _READONLY, _IOERR, _CORRUPT, _FULL, _CANTOPEN, _NOTADB = 3, 8, 10, 11, 13, 14, 26
_BY_MESSAGE = {  # Python < 3.11 has no sqlite_errorcode
    "access permission denied": _PERM,
    "attempt to write a readonly database": _READONLY,
    "disk i/o error": _IOERR,
    "database disk image is malformed": _CORRUPT,
    "database or disk is full": _FULL,
    "unable to open database file": _CANTOPEN,
    "file is not a database": _NOTADB,
}
_ELSEWHERE = "or name another cache file with --cache"
# access(2) with the effective ids where the platform can (set-uid programs ask for those)
_EFFECTIVE = {"effective_ids": True} if os.access in os.supports_effective_ids else {}


def check_cache_file(path: str | Path, what: str | None = None) -> None:
    """Raise one line starting with ``what`` (how the caller names the file, e.g.
    ``"--cache c.sqlite"``; default ``"the cache PATH"``) unless ``path`` can serve as the
    cache: a missing file whose folder can be made and written, an empty file, or a sound
    SQLite database (``PRAGMA quick_check`` on a read-only open) that this process can write,
    in a folder where SQLite can write its journal. Changes nothing in the file (the read-only
    open may leave SQLite's -wal and -shm files beside it, as any reader of a WAL database
    does).

    Safe while this process has the cache open: the file itself is opened by SQLite only
    (closing any other descriptor of it would drop the process's SQLite locks) and read
    directly only once SQLite has called it not a database.

    Raises :class:`~layerfast.errors.UsageError` for a folder, a file that is not regular, not
    SQLite, unreadable or corrupted; :class:`~layerfast.errors.OutputError` for a file that
    cannot be written (read-only file, folder or file system).
    """
    path = Path(path).expanduser()
    what = what or f"the cache {path}"
    if path.is_dir():
        raise UsageError(f"{what} is a folder; name a file, e.g. {path / 'utilities.sqlite'}")
    if not path.exists():
        _check_folder(path, what)
        return
    if not path.is_file():
        raise UsageError(f"{what} is not a regular file")
    if not os.access(path, os.R_OK, **_EFFECTIVE):
        raise UsageError(f"{what} cannot be read ({os.strerror(errno.EACCES)})")
    problem = _quick_check(path) if path.stat().st_size else None  # empty: SQLite fills it
    if problem is not None and problem[0] == "not a database" and not _has_header(path):
        raise UsageError(
            f"{what} is not an SQLite database (the cache of evaluated coalitions); "
            f"move it away {_ELSEWHERE}"
        )
    if problem is not None and problem[0] != "unopened":
        raise UsageError(
            f"{what} is a corrupted SQLite database ({problem[1]}); delete it (its coalitions "
            f"will be evaluated again) {_ELSEWHERE}"
        )
    check_writable(path, what)
    _check_folder(path, what)
    if problem is not None:
        raise UsageError(f"{what} cannot be opened by SQLite ({problem[1]}) {_ELSEWHERE}")


def _quick_check(path: Path) -> tuple[str, str] | None:
    """None when SQLite opens ``path`` read-only and ``PRAGMA quick_check`` says ok; else
    (kind, SQLite's words), kind "corrupt", "not a database" or "unopened". Read-only URIs:
    ``mode=ro``, then ``immutable=1`` (a WAL database in a read-only folder without its -shm
    file opens no other way), unless a journal holds commits the file alone lacks."""
    unopened = None
    wal = path.with_name(path.name + "-wal")
    for options in ("mode=ro", "mode=ro&immutable=1"):
        if options.endswith("immutable=1") and wal.exists() and wal.stat().st_size > 0:
            break  # the file alone may lag its journal: not a fair test of corruption
        try:
            db = sqlite3.connect(f"{path.absolute().as_uri()}?{options}", uri=True, timeout=60)
        except sqlite3.Error as e:
            unopened = ("unopened", str(e))
            continue
        try:
            row = db.execute("PRAGMA quick_check").fetchone()
        except sqlite3.Error as e:
            code = _code(e)
            if code in (_CORRUPT, _NOTADB):
                return ("not a database" if code == _NOTADB else "corrupt"), str(e)
            unopened = ("unopened", str(e))
            continue
        finally:
            db.close()
        return None if row and row[0] == "ok" else ("corrupt", row[0] if row else "no answer")
    return unopened


def _has_header(path: Path) -> bool:
    """Whether ``path`` starts with SQLite's 16-byte header (read only for a file SQLite
    called not a database: no SQLite lock of this process rests on such a file)."""
    try:
        with open(path, "rb") as f:
            return f.read(len(SQLITE_HEADER)) == SQLITE_HEADER
    except OSError:
        return False


def check_writable(path: Path, what: str) -> None:
    """An :class:`~layerfast.errors.OutputError` unless this process may write ``path``, asked
    with ``access(2)`` (which opens nothing, so no SQLite lock is dropped and nothing changes):
    a read-only file (for root too when it is immutable) or a read-only file system."""
    if os.access(path, os.W_OK, **_EFFECTIVE):
        return
    try:
        read_only = bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except (AttributeError, OSError):
        read_only = False
    code = errno.EROFS if read_only else errno.EACCES
    raise OutputError(
        f"{what} cannot be written ({os.strerror(code)}); it is not corrupted: make it "
        f"writable, or copy it to a writable folder and name the copy with --cache",
        errno=code,
    )


def _check_folder(path: Path, what: str) -> None:
    """SQLite creates its journal (``-wal``, ``-shm``) beside the file, and the file itself
    when missing: the folder (or, when missing, its nearest existing parent) must take a new
    file. Probed with a temporary file of another name that is gone at once."""
    folder = path.absolute().parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise UsageError(f"{what}: {folder} is a file, so the folder cannot be created")
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        role = "the file" if not path.exists() else "its journal (-wal, -shm)"
        raise OutputError(
            f"{what} cannot be written: its folder {folder} does not take new files "
            f"({e.strerror or e}), and SQLite must create {role} there; use a writable folder "
            f"{_ELSEWHERE}",
            errno=e.errno,
        ) from None


def _code(error: sqlite3.Error) -> int | None:
    """SQLite's primary result code of ``error`` (from its message before Python 3.11)."""
    code = getattr(error, "sqlite_errorcode", None)
    if isinstance(code, int):
        return code & 0xFF
    return _BY_MESSAGE.get(str(error).strip().lower())


def cache_error(path: Path, error: sqlite3.Error) -> Exception:
    """The one-line error for SQLite's ``error`` about the cache file ``path``: a full disk is
    an :class:`~layerfast.errors.OutputError`; a file that cannot be opened, written or read as
    a database is diagnosed by :func:`check_cache_file` (which names the culprit), else named
    with SQLite's words. Any other error (a bug, a lock) is returned unchanged."""
    code = _code(error)
    if code == _FULL:
        return OutputError(
            f"the cache {path} cannot be written ({error}: the disk or the quota is full); "
            f"free some space {_ELSEWHERE} on another disk; what was stored is kept",
            errno=errno.ENOSPC,
        )
    if code not in (_PERM, _READONLY, _IOERR, _CORRUPT, _CANTOPEN, _NOTADB):
        return error
    try:
        check_cache_file(path)
    except LayerfastError as found:
        return found
    if code in (_CORRUPT, _NOTADB):
        return UsageError(f"the cache {path} cannot be read ({error}) {_ELSEWHERE}")
    return OutputError(f"the cache {path} cannot be opened for writing ({error}) {_ELSEWHERE}")


class _Connection(sqlite3.Connection):
    """The cache's connection: SQLite's errors in ``execute``, ``executemany``, ``commit`` and
    at the end of a ``with`` block (its commit) become :func:`cache_error`'s, naming ``path``.
    A failed commit is rolled back (sqlite3 does it), so the file keeps what was committed."""

    path: Path = Path("utilities.sqlite")

    def execute(self, *args: Any) -> sqlite3.Cursor:
        try:
            return super().execute(*args)
        except sqlite3.Error as e:
            raise cache_error(self.path, e) from None

    def executemany(self, *args: Any) -> sqlite3.Cursor:
        try:
            return super().executemany(*args)
        except sqlite3.Error as e:
            raise cache_error(self.path, e) from None

    def commit(self) -> None:
        try:
            super().commit()
        except sqlite3.Error as e:
            raise cache_error(self.path, e) from None

    def __exit__(self, *exc: Any) -> Any:
        try:
            return super().__exit__(*exc)
        except sqlite3.Error as e:
            raise cache_error(self.path, e) from None
