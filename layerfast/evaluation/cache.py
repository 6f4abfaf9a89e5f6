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

Keys: a :class:`CacheKey` (every input that changes the numbers), stored as three columns
(model fingerprint; one string of the task, requests and options; device type), and the mask's
:func:`layerfast.coalitions.coalition_key` (a '0'/'1' string in player order, the one key
encoding of the package); partials add the batch index.

A file that cannot serve (a folder, not SQLite, corrupted, read-only, on a full disk) is named
in one line, before any work by :func:`check_cache_file` and at open or a write by
:class:`UtilityCache` itself (:mod:`.cache_file`).
"""

from __future__ import annotations

import dataclasses
import re
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import assets
from ..errors import OutputError, warn
from ..paths import reason as write_reason
from .cache_file import _Connection, cache_error, check_cache_file, check_writable

__all__ = [
    "CacheKey",
    "Columns",
    "Key",
    "UtilityCache",
    "cache_error",
    "check_cache_file",
    "default_path",
    "warn_unfinished_elsewhere",
]

Columns = tuple[str, str, str]  # (model, requests and options, device type): how a key is stored
_WHERE = "model=? AND requests=? AND device=?"
_OPTIONS = re.compile(
    r"^(?P<task>[^-]+)-(?P<requests>[^-]+)-(?P<layout>(?:trie-filled|trie-packed|unpacked)(?:-kl)?)"
    r"-L(?P<max_length>\d+)"
    r"-B(?P<batch_tokens>\d+)-V(?P<vocab_chunk>\d+)-(?P<dtype>[^-]+)-(?P<attention>.+)$"
)


@dataclass(frozen=True)
class CacheKey:
    """Every input that changes a coalition's per-request log-likelihoods.

    model: the weights' fingerprint (:meth:`~layerfast.models.SublayerModel.fingerprint`).
    task: the task's fingerprint; requests: a hash of the tokenised requests.
    layout: "trie-filled" (trie rows, short ones side by side; "trie-packed" in caches made
    before), or "unpacked" (with "-kl" when the rows hold KL divergences).
    max_length, batch_tokens: in tokens. vocab_chunk: the LM head's vocabulary rows per step.
    dtype, attention: the model's. device: "cpu" or "cuda", where the coalitions run.

    Three options are left out on purpose: the executor (prefix and naive are bit-identical,
    tested), the prefix executor's memory budget (a recomputed state is the same state) and its
    stacking (``stack_tokens``: a stacked value equals the unstacked one within rounding).
    """

    model: str
    task: str
    requests: str
    layout: str
    max_length: int
    batch_tokens: int
    vocab_chunk: int
    dtype: str
    attention: str
    device: str

    def columns(self) -> Columns:
        """The three stored columns; the middle one joins the task, the requests and the
        options with dashes, as every cache since version 0.1 has stored them."""
        options = "-".join(
            [
                self.layout,
                f"L{self.max_length}",
                f"B{self.batch_tokens}",
                f"V{self.vocab_chunk}",
                self.dtype,
                self.attention,
            ]
        )
        return self.model, f"{self.task}-{self.requests}-{options}", self.device

    @classmethod
    def parse(cls, columns: Columns) -> CacheKey | None:
        """The key stored as ``columns``; None for a string of another form."""
        model, middle, device = columns
        m = _OPTIONS.match(middle)
        if m is None:
            return None
        parts = m.groupdict()
        ints = {k: int(parts.pop(k)) for k in ("max_length", "batch_tokens", "vocab_chunk")}
        return cls(model=model, device=device, **parts, **ints)


Key = CacheKey | Columns  # a cache method takes either


def _columns(key: Key) -> Columns:
    return key.columns() if isinstance(key, CacheKey) else tuple(key)


def warn_unfinished_elsewhere(cache: UtilityCache, key: CacheKey) -> None:
    """Warn when ``cache`` holds unfinished coalitions under a key that differs from ``key`` only
    in batch_tokens (a killed run whose automatic batch size came out differently): they are
    not reused unless that batch_tokens is passed again."""
    found = cache.unfinished_elsewhere(key)
    if found:
        other, n = max(found.items(), key=lambda kv: kv[1])
        warn(
            f"the cache {cache.path} holds {n} unfinished coalition(s) of this model and task "
            f"evaluated with batch_tokens={other}, but this game uses batch_tokens="
            f"{key.batch_tokens}, so they will be evaluated again; to resume them pass "
            f"--batch-tokens {other} (batch_tokens={other})"
        )


def open_cache(cache: bool | str | Path | None) -> UtilityCache | None:
    """A Game's ``cache=`` argument opened: None/False none, True the user cache file, else the
    SQLite file at that path."""
    if cache is None or cache is False:
        return None
    return UtilityCache(None if cache is True else cache)


def default_path() -> Path:
    return assets.cache_dir() / "utilities.sqlite"


def _blob(values: np.ndarray) -> bytes:
    return np.asarray(values, np.float64).tobytes()


class UtilityCache:
    """One SQLite file of finished coalition rows and per-batch partial rows."""

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path is not None else default_path()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise OutputError(
                f"the cache {self.path}: its folder {self.path.parent} cannot be made "
                f"({write_reason(e)})",
                errno=e.errno,
            ) from None
        if self.path.is_file():  # else SQLite opens it read-only, without a word
            check_writable(self.path, f"the cache {self.path}")
        try:
            db = sqlite3.connect(self.path, timeout=60, factory=_Connection)
        except sqlite3.Error as e:
            raise cache_error(self.path, e) from None
        db.path = self.path  # errors from here on name it (see cache_error)
        self._db = db
        try:
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
        except BaseException:
            db.close()
            raise

    def _select(self, table: str, columns: str, key: Key, masks: list[str]):
        for start in range(0, len(masks), 500):
            chunk = masks[start : start + 500]
            yield from self._db.execute(
                f"SELECT {columns} FROM {table} WHERE {_WHERE} "
                f"AND mask IN ({','.join('?' * len(chunk))})",
                (*_columns(key), *chunk),
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
        key = _columns(key)
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
        key = _columns(key)
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
        args = () if key is None else _columns(key)
        return self._db.execute(f"SELECT COUNT(*) FROM {table}{where}", args).fetchone()[0]

    def unfinished_elsewhere(self, key: CacheKey) -> dict[int, int]:
        """Unfinished coalitions stored under keys equal to ``key`` but for ``batch_tokens``
        (a killed run whose automatic batch size came out differently): {batch_tokens:
        coalitions}."""
        model, _, device = key.columns()
        found: dict[int, int] = {}
        for middle, n in self._db.execute(
            "SELECT requests, COUNT(DISTINCT mask) FROM partials WHERE model=? AND device=? "
            "GROUP BY requests",
            (model, device),
        ):
            other = CacheKey.parse((model, middle, device))
            if (
                other is not None
                and other.batch_tokens != key.batch_tokens
                and dataclasses.replace(other, batch_tokens=key.batch_tokens) == key
            ):
                found[other.batch_tokens] = found.get(other.batch_tokens, 0) + int(n)
        return found

    def close(self) -> None:
        self._db.close()
