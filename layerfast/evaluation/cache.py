"""On-disk cache of evaluated coalitions (SQLite), so that a killed sweep resumes.

What is stored per coalition is the vector of per-request log-likelihoods, not one utility: every
utility (acc, acc_norm, margin, ...) is derived from it, so ``ablate`` after ``shapley`` reuses
shared coalitions whatever utility each asked for. Keys: model fingerprint (config, dtype,
weights), requests fingerprint (task items tokenised, so a tokenizer change invalidates), the
device type, and the mask's :func:`layerfast.coalitions.coalition_key` (a '0'/'1' string in
player order, the one key encoding of the package).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np

from .. import assets


def default_path() -> Path:
    return assets.cache_dir() / "utilities.sqlite"


class UtilityCache:
    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path is not None else default_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, timeout=60)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS coalitions (model TEXT, requests TEXT, device TEXT, "
            "mask TEXT, loglik BLOB, PRIMARY KEY (model, requests, device, mask))"
        )
        self._db.commit()

    def get(self, key: tuple[str, str, str], masks: list[str]) -> dict[str, np.ndarray]:
        """Stored log-likelihoods, float64 [n_requests] each, of the mask keys found."""
        found: dict[str, np.ndarray] = {}
        for start in range(0, len(masks), 500):
            chunk = masks[start : start + 500]
            rows = self._db.execute(
                f"SELECT mask, loglik FROM coalitions WHERE model=? AND requests=? AND device=? "
                f"AND mask IN ({','.join('?' * len(chunk))})",
                (*key, *chunk),
            )
            found.update({m: np.frombuffer(blob, dtype=np.float64).copy() for m, blob in rows})
        return found

    def put(self, key: tuple[str, str, str], mask: str, loglik: np.ndarray) -> None:
        """Store one coalition and commit at once (a kill loses at most the one in flight)."""
        self._db.execute(
            "INSERT OR REPLACE INTO coalitions VALUES (?, ?, ?, ?, ?)",
            (*key, mask, np.asarray(loglik, np.float64).tobytes()),
        )
        self._db.commit()

    def count(self, key: tuple[str, str, str] | None = None) -> int:
        if key is None:
            return self._db.execute("SELECT COUNT(*) FROM coalitions").fetchone()[0]
        return self._db.execute(
            "SELECT COUNT(*) FROM coalitions WHERE model=? AND requests=? AND device=?", key
        ).fetchone()[0]

    def close(self) -> None:
        self._db.close()
