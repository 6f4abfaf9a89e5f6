"""The checks of a cache file (``check_cache_file``) and ``UtilityCache``'s errors at open and at a
write: a sound cache that cannot be written is called that (never corrupted, never advised to be
deleted); a full disk is one line naming the file, and the rows stored before stay.

The checks open the file through SQLite only (closing another descriptor of it would drop the
process's SQLite locks: ``test_checks_keep_the_locks_of_an_open_cache``).

Read-only cases are real where the machine allows: ``chmod`` for a user, ``chattr +i`` (an
immutable file or folder, which root cannot write either) when running as root, and a read-only
bind mount in a private mount namespace (``unshare -m``) for a read-only file system; each skips
where its tool is missing or not permitted. A full disk is SQLite's own: ``PRAGMA
max_page_count`` makes it fail with "database or disk is full" at the page limit.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from layerfast.errors import LayerfastError, OutputError, UsageError
from layerfast.evaluation import cache_file
from layerfast.evaluation.cache import UtilityCache, check_cache_file

ROOT = Path(__file__).resolve().parents[2]
KEY = ("model", "requests", "cpu")


def make_cache(path: Path, rows: int = 3) -> Path:
    """A sound cache holding ``rows`` finished coalitions and one partial."""
    cache = UtilityCache(path)
    cache.put_many(KEY, [(f"{i:03b}", np.arange(4.0) + i) for i in range(rows)])
    cache.put_partials(KEY, 0, [("111", np.ones(2))])
    cache.close()
    return path


def state(path: Path) -> tuple[bytes, int]:
    """The file's bytes and modification time (ns)."""
    return path.read_bytes(), path.stat().st_mtime_ns


@contextlib.contextmanager
def read_only(path: Path) -> Iterator[None]:
    """``path`` (a file or a folder) made read-only for this process, restored on exit: chmod
    for a user; as root (whom permission bits do not stop) the immutable attribute."""
    if os.geteuid() != 0:
        mode = path.stat().st_mode
        path.chmod(0o555 if path.is_dir() else 0o444)
        try:
            yield
        finally:
            path.chmod(mode)
        return
    chattr = shutil.which("chattr")
    if chattr is None or subprocess.run([chattr, "+i", str(path)], capture_output=True).returncode:
        pytest.skip("running as root, and chattr +i is not available here")
    try:
        yield
    finally:
        subprocess.run([chattr, "-i", str(path)], check=True)


def message(error: pytest.ExceptionInfo) -> str:
    text = str(error.value)
    assert "\n" not in text
    return text


# --- check_cache_file -------------------------------------------------------------------------
def test_a_sound_cache_passes_and_is_left_as_it_was(tmp_path):
    path = make_cache(tmp_path / "c.sqlite")
    before = state(path)
    check_cache_file(path, "--cache c.sqlite")
    assert state(path) == before
    empty = tmp_path / "empty.sqlite"
    empty.write_bytes(b"")
    check_cache_file(empty, "--cache empty.sqlite")  # SQLite makes a database in it
    check_cache_file(tmp_path / "new" / "deeper" / "c.sqlite", "--cache new")
    assert not (tmp_path / "new").exists()  # the check makes nothing


def test_what_is_not_a_cache(tmp_path):
    with pytest.raises(UsageError, match="--cache d is a folder"):
        check_cache_file(tmp_path, "--cache d")
    with pytest.raises(UsageError, match="not a regular file"):
        check_cache_file(Path("/dev/null"), "--cache /dev/null")
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    with pytest.raises(UsageError, match="--cache notes.txt is not an SQLite database"):
        check_cache_file(notes, "--cache notes.txt")
    parent = tmp_path / "plain"
    parent.write_text("x")
    with pytest.raises(UsageError, match="is a file"):
        check_cache_file(parent / "c.sqlite", "--cache plain/c.sqlite")


def test_only_a_failed_integrity_check_is_called_corrupted(tmp_path):
    path = make_cache(tmp_path / "c.sqlite", rows=200)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(UsageError) as e:
        check_cache_file(path, "--cache c.sqlite")
    assert "--cache c.sqlite is a corrupted SQLite database" in message(e)
    assert "delete it" in message(e)


def test_a_read_only_cache_file_is_not_writable_not_corrupted(tmp_path):
    path = make_cache(tmp_path / "c.sqlite")
    before = state(path)
    with read_only(path), pytest.raises(OutputError) as e:
        check_cache_file(path, "--cache c.sqlite")
    text = message(e)
    assert text.startswith("--cache c.sqlite cannot be written (")
    assert "corrupted" not in text.replace("not corrupted", "") and "delete" not in text
    assert state(path) == before


def test_a_cache_in_a_read_only_folder(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    path = make_cache(folder / "c.sqlite")
    with read_only(folder):
        with pytest.raises(OutputError) as e:
            check_cache_file(path, "--cache ro/c.sqlite")
        assert f"its folder {folder} does not take new files" in message(e)
        assert "journal" in message(e) and "delete" not in message(e)
        with pytest.raises(OutputError) as e:
            check_cache_file(folder / "new.sqlite", "--cache ro/new.sqlite")
        assert "--cache ro/new.sqlite cannot be written" in message(e)
        with pytest.raises(OutputError) as e:
            UtilityCache(folder / "new.sqlite")
        assert str(folder / "new.sqlite") in message(e) and "does not take new files" in message(e)


def test_a_read_only_file_system_is_named(tmp_path, monkeypatch):
    """What access(2) and statvfs(2) say on a read-only file system, mocked (the real mount is
    the next test): the file is named not writable, for that reason, and not corrupted."""
    path = make_cache(tmp_path / "c.sqlite")
    real_access = os.access

    class ReadOnly:
        f_flag = os.ST_RDONLY

    monkeypatch.setattr(
        cache_file.os, "access", lambda p, mode, **kw: not mode & os.W_OK and real_access(p, mode)
    )
    monkeypatch.setattr(cache_file.os, "statvfs", lambda p: ReadOnly())
    with pytest.raises(OutputError) as e:
        check_cache_file(path, "--cache c.sqlite")
    assert "(Read-only file system)" in message(e) and e.value.errno == errno.EROFS
    assert "delete" not in message(e)


PROBE = """
import sys
from pathlib import Path
from layerfast.errors import LayerfastError
from layerfast.evaluation.cache import UtilityCache, check_cache_file
for name in sys.argv[1:]:
    steps = (lambda: check_cache_file(Path(name), "--cache " + name), lambda: UtilityCache(name))
    for step in steps:
        try:
            step()
            print("ok")
        except LayerfastError as e:
            print(type(e).__name__, e)
"""


def test_a_real_read_only_file_system(tmp_path):
    """A read-only bind mount in a private mount namespace (nothing outside it changes)."""
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("unshare is not available")
    folder = tmp_path / "mnt"
    folder.mkdir()
    path = make_cache(folder / "c.sqlite")
    before = state(path)
    script = tmp_path / "probe.py"
    script.write_text(PROBE)
    flags = ["-m"] if os.geteuid() == 0 else ["-r", "-m"]
    command = (
        f"mount --bind -o ro {folder} {folder} && "
        f"{sys.executable} {script} {path} {folder / 'new.sqlite'}"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [unshare, *flags, "sh", "-c", command], capture_output=True, text=True, env=env
    )
    if (
        proc.returncode
        and "mount" in proc.stderr + proc.stdout
        and "OutputError" not in proc.stdout
    ):
        pytest.skip(f"no private read-only mount here: {proc.stderr.strip()[:200]}")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 4, proc.stdout
    assert all(ln.startswith("OutputError") and "Read-only file system" in ln for ln in lines)
    assert "corrupted" not in lines[0].replace("not corrupted", "")
    assert state(path) == before and not (folder / "new.sqlite").exists()


# --- UtilityCache at open and at a write --------------------------------------------------------
def test_open_names_the_file_and_the_reason(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n" * 20)
    with pytest.raises(UsageError) as e:
        UtilityCache(notes)
    assert f"the cache {notes} is not an SQLite database" in message(e)
    path = make_cache(tmp_path / "c.sqlite")
    with read_only(path), pytest.raises(OutputError) as e:
        UtilityCache(path)
    assert f"the cache {path} cannot be written (" in message(e)
    UtilityCache(path).close()  # writable again: fine
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutputError, match="cannot be made"):
        UtilityCache(blocker / "sub" / "c.sqlite")


def limited_connect(real_connect, pages: int):
    """sqlite3.connect whose connections may grow the file to ``pages`` pages only: beyond,
    SQLite fails with "database or disk is full", as on a full disk."""

    def connect(*args, **kwargs):
        db = real_connect(*args, **kwargs)
        db.execute(f"PRAGMA max_page_count = {pages}")
        return db

    return connect


def test_a_full_disk_at_creation_is_one_line(tmp_path, monkeypatch):
    path = tmp_path / "c.sqlite"
    monkeypatch.setattr(sqlite3, "connect", limited_connect(sqlite3.connect, 1))
    with pytest.raises(OutputError) as e:
        UtilityCache(path)
    assert f"the cache {path} cannot be written (database or disk is full" in message(e)
    assert e.value.errno == errno.ENOSPC


def test_a_full_disk_at_a_write_keeps_what_was_stored(tmp_path):
    path = make_cache(tmp_path / "c.sqlite")
    cache = UtilityCache(path)
    pages = cache._db.execute("PRAGMA page_count").fetchone()[0]
    cache._db.execute(f"PRAGMA max_page_count = {pages}")
    big = [(f"{i:064b}", np.random.default_rng(i).random(5000)) for i in range(8)]
    with pytest.raises(OutputError) as e:
        cache.put_partials(KEY, 1, big)
    assert "database or disk is full" in message(e) and str(path) in message(e)
    with pytest.raises(OutputError):
        cache.put_many(KEY, big)
    assert cache.count(KEY) == 3 and cache.count_partials(KEY) == 1
    assert np.array_equal(cache.get(KEY, ["001"])["001"], np.arange(4.0) + 1)
    cache.close()
    check_cache_file(path, "--cache c.sqlite")  # still sound
    reopened = UtilityCache(path)
    reopened.put_partials(KEY, 1, big[:1])  # and writable once there is room
    assert reopened.count_partials(KEY) == 2
    reopened.close()


def test_other_errors_are_left_alone(tmp_path):
    cache = UtilityCache(tmp_path / "c.sqlite")
    with pytest.raises(sqlite3.OperationalError) as e:
        cache._db.execute("SELECT nothing FROM nowhere")
    assert not isinstance(e.value, LayerfastError)
    cache.close()


def test_checks_keep_the_locks_of_an_open_cache(tmp_path, monkeypatch):
    """While this process has the cache open, neither a check nor a second open opens the file
    outside SQLite: closing such a descriptor drops every POSIX lock the process holds on the
    file, SQLite's included, and another process may then take itself for the last user,
    checkpoint and delete the journal (a sweep killed and resumed lost its writes so)."""
    import builtins

    path = make_cache(tmp_path / "c.sqlite")
    cache = UtilityCache(path)
    raw = []
    real_open, real_os_open = builtins.open, os.open

    def spy_open(file, *args, **kwargs):
        raw.append(str(file))
        return real_open(file, *args, **kwargs)

    def spy_os_open(file, *args, **kwargs):
        raw.append(str(file))
        return real_os_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", spy_open)
    monkeypatch.setattr(os, "open", spy_os_open)
    check_cache_file(path, "--cache c.sqlite")
    UtilityCache(path).close()
    monkeypatch.undo()
    assert str(path) not in raw, raw
    other = f"import sqlite3; sqlite3.connect({str(path)!r}).execute('SELECT 1').close()"
    subprocess.run([sys.executable, "-c", other], check=True)
    cache.put_partials(KEY, 2, [("000", np.ones(2))])
    cache.put_many(KEY, [("110", np.zeros(4))])
    with sqlite3.connect(path) as db:  # another connection sees every commit
        assert db.execute("SELECT COUNT(*) FROM partials").fetchone()[0] == 2
        assert db.execute("SELECT COUNT(*) FROM coalitions").fetchone()[0] == 4
    cache.close()
