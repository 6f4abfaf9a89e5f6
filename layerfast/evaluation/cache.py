"""On-disk cache of evaluated coalitions (SQLite), so that a killed sweep resumes.

What is stored per coalition is the vector of per-request log-likelihoods, not one utility: every
utility (acc, acc_norm, margin, ...) is derived from it, so ``ablate`` after ``shapley`` reuses
shared coalitions whatever utility each asked for.

Two tables share one key. ``coalitions`` holds one finished row per coalition. ``partials`` holds
the per-batch pieces of coalitions still being evaluated: the log-likelihoods of one forward
batch's requests (in the batch's ``request_index`` order), written in one transaction per batch
as soon as that batch is done for every coalition in flight, so a kill loses at most one batch of
forward work per coalition in flight. Once all of a coalition's batches are there its row is
assembled into ``coalitions`` and its partials are deleted, in one transaction.

Keys: the model fingerprint, a string naming the requests and every option that changes the
numbers (see :meth:`layerfast.evaluation.game.Game.cache_key`), the device type, and the mask's
:func:`layerfast.coalitions.coalition_key` (a '0'/'1' string in player order, the one key
encoding of the package); partials add the batch index.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from .. import assets

Key = tuple[str, str, str]  # (model, requests and options, device type)
_WHERE = "model=? AND requests=? AND device=?"


def default_path() -> Path:
    return assets.cache_dir() / "utilities.sqlite"


def _blob(values: np.ndarray) -> bytes:
    return np.asarray(values, np.float64).tobytes()


class UtilityCache:
    """One SQLite file of finished coalition rows and per-batch partial rows."""

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path is not None else default_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, timeout=60)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS coalitions (model TEXT, requests TEXT, device TEXT, "
            "mask TEXT, loglik BLOB, PRIMARY KEY (model, requests, device, mask))"
        )
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS partials (model TEXT, requests TEXT, device TEXT, "
            "mask TEXT, batch INTEGER, loglik BLOB, "
            "PRIMARY KEY (model, requests, device, mask, batch))"
        )
        self._db.commit()

    def _select(self, table: str, columns: str, key: Key, masks: list[str]):
        for start in range(0, len(masks), 500):
            chunk = masks[start : start + 500]
            yield from self._db.execute(
                f"SELECT {columns} FROM {table} WHERE {_WHERE} "
                f"AND mask IN ({','.join('?' * len(chunk))})",
                (*key, *chunk),
            )

    def get(self, key: Key, masks: list[str]) -> dict[str, np.ndarray]:
        """Stored log-likelihoods, float64 [n_requests] each, of the mask keys found."""
        rows = self._select("coalitions", "mask, loglik", key, masks)
        return {m: np.frombuffer(blob, dtype=np.float64).copy() for m, blob in rows}

    def get_partials(self, key: Key, masks: list[str]) -> dict[str, dict[int, np.ndarray]]:
        """Stored per-batch pieces: mask -> {batch index: float64 [requests of that batch]}."""
        found: dict[str, dict[int, np.ndarray]] = {}
        for m, b, blob in self._select("partials", "mask, batch, loglik", key, masks):
            found.setdefault(m, {})[int(b)] = np.frombuffer(blob, dtype=np.float64).copy()
        return found

    def put(self, key: Key, mask: str, loglik: np.ndarray) -> None:
        """Store one finished coalition and commit at once."""
        self.put_many(key, [(mask, loglik)])

    def put_many(self, key: Key, rows: Iterable[tuple[str, np.ndarray]]) -> None:
        """Store finished coalitions and drop their partials, in one transaction."""
        rows = [(mask, _blob(ll)) for mask, ll in rows]
        with self._db:
            self._db.executemany(
                "INSERT OR REPLACE INTO coalitions VALUES (?, ?, ?, ?, ?)",
                [(*key, mask, blob) for mask, blob in rows],
            )
            self._db.executemany(
                f"DELETE FROM partials WHERE {_WHERE} AND mask=?",
                [(*key, mask) for mask, _ in rows],
            )

    def put_partials(self, key: Key, batch: int, rows: Iterable[tuple[str, np.ndarray]]) -> None:
        """Store one batch's log-likelihoods for several coalitions, in one transaction."""
        with self._db:
            self._db.executemany(
                "INSERT OR REPLACE INTO partials VALUES (?, ?, ?, ?, ?, ?)",
                [(*key, mask, int(batch), _blob(ll)) for mask, ll in rows],
            )

    def count(self, key: Key | None = None) -> int:
        """Finished coalition rows (of one key, or of all)."""
        return self._count("coalitions", key)

    def count_partials(self, key: Key | None = None) -> int:
        """Stored (coalition, batch) pieces of unfinished coalitions (of one key, or of all)."""
        return self._count("partials", key)

    def _count(self, table: str, key: Key | None) -> int:
        where = "" if key is None else f" WHERE {_WHERE}"
        return self._db.execute(f"SELECT COUNT(*) FROM {table}{where}", key or ()).fetchone()[0]

    def close(self) -> None:
        self._db.close()
