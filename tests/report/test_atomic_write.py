"""Every output file is written whole or not at all: a write that fails partway (a full disk,
simulated by a file whose ``write`` stores some bytes and then raises ENOSPC, or by a
``savefig`` that does the same) leaves the old file or none, never a truncated one, leaves no
temporary file behind, keeps the files written before it, and raises one
:class:`~layerfast.errors.OutputError` naming the path and the reason."""

from __future__ import annotations

import errno
import io
import os
from pathlib import Path

import numpy as np
import pytest

import layerfast.paths
from layerfast.errors import OutputError
from layerfast.paths import atomic_write
from layerfast.report import document, files, grid, html, plots
from tests.report.report_inputs import ablation_result

ENOSPC = os.strerror(errno.ENOSPC)  # "No space left on device"


class FullFile(io.TextIOWrapper):
    """A text file that takes ``room`` characters, then fails as a full disk does."""

    room = 40

    def write(self, text: str) -> int:
        if len(text) > self.room:
            super().write(text[: self.room])
            self.flush()
            raise OSError(errno.ENOSPC, ENOSPC)
        FullFile.room -= len(text)
        return super().write(text)


def full_disk(monkeypatch, room: int = 40) -> None:
    """``open`` in the writers' modules returns files that fail after ``room`` characters."""
    FullFile.room = room

    def fake_open(file, mode="r", *args, **kwargs):
        if "w" not in mode:
            return open(file, mode, *args, **kwargs)
        newline = kwargs.get("newline")
        raw = open(file, mode.replace("w", "wb").replace("t", ""), buffering=0)
        return FullFile(raw, encoding=kwargs.get("encoding") or "utf-8", newline=newline)

    for module in (layerfast.paths, files):
        monkeypatch.setattr(module, "open", fake_open, raising=False)


def full_disk_for_figures(monkeypatch, suffix: str) -> None:
    """``Figure.savefig`` to a ``suffix`` file writes half the image, then fails (ENOSPC)."""
    from matplotlib.figure import Figure

    real = Figure.savefig

    def savefig(self, fname, *args, **kwargs):
        if not str(fname).endswith(suffix):
            return real(self, fname, *args, **kwargs)
        buffer = io.BytesIO()
        real(self, buffer, *args, **kwargs)
        Path(fname).write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
        raise OSError(errno.ENOSPC, ENOSPC)

    monkeypatch.setattr(Figure, "savefig", savefig)


def names(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


def check_error(error: pytest.ExceptionInfo, path: Path) -> None:
    text = str(error.value)
    assert "\n" not in text and str(path) in text and ENOSPC in text
    assert error.value.errno == errno.ENOSPC


@pytest.mark.parametrize("old", [None, '{"old": true}\n'])
def test_text_writers_leave_the_old_file_or_none(tmp_path, monkeypatch, old):
    doc = document.Document([document.Heading("report", 1), document.Paragraph("x" * 500)])
    writers = {
        "a.json": lambda p: files.write_json(p, {"values": list(range(100))}),
        "a.csv": lambda p: files.write_csv(p, [{"a": i, "b": "x" * 20} for i in range(50)]),
        "report.md": lambda p: document.write_markdown(p, doc),
        "report.html": lambda p: html.write_html(p, doc),
    }
    for name, write in writers.items():
        path = tmp_path / name
        if old is not None:
            path.write_text(old)
        full_disk(monkeypatch)
        with pytest.raises(OutputError) as e:
            write(path)
        check_error(e, path)
        monkeypatch.undo()
        assert (path.read_text() if path.exists() else None) == old, name
        assert names(tmp_path) == ({name} if old is not None else set())  # no temporary file
        path.unlink(missing_ok=True)


def test_a_failed_figure_keeps_the_files_before_it(tmp_path, monkeypatch):
    abl = ablation_result()
    (tmp_path / "ablation.svg").write_text("<svg>an earlier run</svg>")
    full_disk_for_figures(monkeypatch, ".svg")
    with pytest.raises(OutputError) as e:
        files.save_ablation(tmp_path, abl, {"model": "m", "task": "t"})
    check_error(e, tmp_path / "ablation.svg")
    assert names(tmp_path) == {"ablation.json", "ablation.csv", "ablation.png", "ablation.svg"}
    assert (tmp_path / "ablation.svg").read_text() == "<svg>an earlier run</svg>"
    assert (tmp_path / "ablation.png").read_bytes().startswith(b"\x89PNG")
    assert files.json.loads((tmp_path / "ablation.json").read_text())["model"] == "m"
    monkeypatch.undo()
    files.save_ablation(tmp_path, abl, {"model": "m", "task": "t"})  # room again: all written
    assert (tmp_path / "ablation.svg").read_text().lstrip().startswith("<?xml")


def test_grid_and_convergence_figures(tmp_path, monkeypatch):
    full_disk_for_figures(monkeypatch, ".svg")
    results = {("m", "t"): (["attn0", "mlp0"], np.array([0.3, -0.1]))}
    with pytest.raises(OutputError) as e:
        grid.save_grid(tmp_path, ["m"], ["t"], results)
    check_error(e, tmp_path / "grid.svg")
    assert names(tmp_path) == {"grid.png"}
    full_disk_for_figures(monkeypatch, ".png")
    records = [
        {"n_evaluations": n, "values": [0.1, 0.2], "stderr": [0.01, 0.02], "players": ["a", "b"]}
        for n in (10, 20)
    ]
    with pytest.raises(OutputError) as e:
        plots.plot_convergence(records, tmp_path / "convergence.png")
    check_error(e, tmp_path / "convergence.png")
    assert names(tmp_path) == {"grid.png"}


def test_atomic_write_modes_and_other_errors(tmp_path):
    path = tmp_path / "new.txt"
    layerfast.paths.write_text(path, "hello\n")
    umask = os.umask(0o022)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600
    path.chmod(0o640)
    layerfast.paths.write_text(path, "again\n")
    assert path.stat().st_mode & 0o777 == 0o640 and path.read_text() == "again\n"
    with pytest.raises(ZeroDivisionError), atomic_write(path) as tmp:  # a bug: kept as it is
        tmp.write_text("half")
        1 / 0  # noqa: B018
    assert path.read_text() == "again\n" and names(tmp_path) == {"new.txt"}
    with pytest.raises(OutputError, match=f"cannot write {tmp_path / 'no' / 'x.json'}: "):
        files.write_json(tmp_path / "no" / "x.json", {})
