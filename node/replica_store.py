"""What a miner keeps besides the chain: its consensus hard state and the evidence it saw.

A separate SQLite file (``consensus.db``) beside the chain store, written with
``synchronous=FULL``: :meth:`ReplicaStateStore.save_hard_state` returns only once the
engine's hard state is on disk, which is what lets the host send the messages of the
same ``Ready`` afterwards (the persistence contract: a restarted miner never signs two
different things for one slot). Validator sets are not stored here: they are a function
of committed chain state and are recomputed from it.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from node.consensus.evidence import EquivocationEvidence

_SCHEMA = """
CREATE TABLE IF NOT EXISTS hard_state (id INTEGER PRIMARY KEY CHECK (id = 0), value BLOB);
CREATE TABLE IF NOT EXISTS evidence (
    key BLOB PRIMARY KEY, validator BLOB NOT NULL, height INTEGER NOT NULL,
    round INTEGER NOT NULL, kind INTEGER NOT NULL, encoded BLOB NOT NULL,
    seen_at_height INTEGER NOT NULL
);
"""


class ReplicaStateStore:
    """Durable hard state and equivocation evidence of one miner."""

    def __init__(self, path: Path) -> None:
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.executescript(_SCHEMA)
        self._lock = threading.Lock()

    def load_hard_state(self) -> bytes | None:
        """The engine's last persisted hard state, or None on a first start."""
        with self._lock:
            row = self._conn.execute("SELECT value FROM hard_state WHERE id = 0").fetchone()
        return None if row is None else bytes(row[0])

    def save_hard_state(self, value: bytes) -> None:
        """Durably replace the hard state (fsynced when this returns)."""
        with self._lock:
            self._conn.execute(
                "INSERT INTO hard_state (id, value) VALUES (0, ?) "
                "ON CONFLICT(id) DO UPDATE SET value = excluded.value",
                (value,),
            )

    def add_evidence(self, evidence: EquivocationEvidence, seen_at_height: int) -> bool:
        """Record evidence once per offence; True if it was new."""
        validator, _engine, kind, height, round_ = evidence.key()
        key = bytes(validator) + b"".join(x.to_bytes(8, "big") for x in evidence.key()[1:])
        with self._lock:
            cur = self._conn.execute(
                "INSERT OR IGNORE INTO evidence VALUES (?, ?, ?, ?, ?, ?, ?)",
                (key, validator, height, round_, kind, evidence.encode(), seen_at_height),
            )
        return cur.rowcount == 1

    def evidence(self) -> list[EquivocationEvidence]:
        """Every recorded offence, by height."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT encoded FROM evidence ORDER BY height, validator, kind, round"
            ).fetchall()
        return [EquivocationEvidence.decode(bytes(r[0])) for r in rows]

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._conn.close()
