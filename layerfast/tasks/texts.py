"""Calibration text for the activation statistics: documents as plain strings."""

from __future__ import annotations

from pathlib import Path

from .. import assets
from ..errors import UsageError
from .task import text_lines


def calibration_texts(spec: str, n: int) -> list[str]:
    """The first ``n`` non-empty documents of ``spec``.

    spec: ``"lee"`` (gensim's Lee background corpus, 300 news articles), ``"pydoc"`` (the standard
    library's ``pydoc_data.topics``, 79 documents, no download) or a ``.txt`` file with one document
    per line.
    """
    if spec == "lee":
        lines = assets.fetch(assets.LEE_CORPUS).read_text(encoding="utf-8").splitlines()
    elif spec == "pydoc":
        from pydoc_data.topics import topics

        lines = [topics[k] for k in sorted(topics)]
    else:
        path = Path(spec).expanduser()
        if not path.exists():
            raise UsageError(
                f"calibration text {spec!r} is neither 'lee', 'pydoc' nor an existing .txt file"
            )
        lines = list(text_lines(path))  # errors name the file and line
    texts = [t for t in (line.strip() for line in lines) if t][:n]
    if not texts:
        raise UsageError(f"no calibration text in {spec!r}")
    return texts
