"""The audit index: a SQLite database built from a miner's chain data alone.

Theory of operation
-------------------
The index is derived data. It reads the miner's ``chain.db`` read-only (a SQLite URI with
``mode=ro``; the miner may keep running, WAL lets both proceed) and never anything else:
no RPC, no trust in a running node. For each committed block in height order it

1. records the block (height, hash, timestamp, proposer, epoch);
2. decodes every log of the three predeployed contracts (``Membership``,
   ``ModelRegistry``, ``Election``) with the ABIs of :func:`contracts.load_artifact`, and
   stores one ``events`` row per log: event name, block, timestamp, transaction hash and
   sender, the event's own actor, and the record ids it concerns (model, version,
   round, update, dataset, proposal), the decoded arguments as JSON; ``event_accounts``
   links every account an event involves (``sender``, ``actor``, ``subject``);
3. maintains the registry's records from those events: ``versions`` (+ parents,
   datasets), ``datasets``, ``rounds``, ``updates``, ``aliases``;
4. at every epoch boundary ``h = (k-1)E`` reads the validator set of epoch ``k`` from the
   state at ``h`` exactly as the miner does (``Membership.minersList()`` for PBFT,
   ``Election.committee()`` for DPoS, an empty answer keeps the previous set) with the
   executor's ``call(..., at=header)`` — the state is the ground truth; the events are
   kept to explain *why* it changed.

Genesis has no logs (its ``initialize`` calls are system calls), so the genesis members
and their roles are recorded as synthetic ``GenesisMember`` events at height 0, and
epochs 0 and 1 get the genesis validators.

**Incremental and deterministic.** :meth:`AuditIndex.update` indexes the blocks after the
last indexed height, a batch of blocks per SQLite transaction (the index is never
half-way through a block). Before that it compares the hash it stored for its last block
with the chain store's: a different or missing block means the store was replaced,
truncated or tampered with, and the update is refused (:class:`IndexInconsistent`) —
rebuild, or run ``audit verify``. :meth:`AuditIndex.rebuild` deletes everything and
indexes from genesis; the same chain always gives the same rows (ordering is by
``(height, log_index)`` only).

Schema (version 1)::

    meta(key PK, value)                 schema_version, genesis_hash, chain_id, engine,
                                        epoch_length, indexed_height
    blocks(height PK, hash, timestamp, proposer, epoch)
    events(seq PK, height, log_index, timestamp, tx_hash, tx_index, sender, contract,
           name, actor, model, version_id, round_id, update_id, dataset_id,
           proposal_id, args)           -- seq = chain order; partial indexes per id
    event_accounts(address, seq, relation)   PK(address, seq, relation)
    versions(id PK, name, version, digest, size, format, round_id, registrant, height,
             tx_hash, status, status_reason)  index (name, version)
    version_parents(child, position, parent) PK(child, position), index (parent)
    version_datasets(version_id, position, dataset_id)
    datasets(id PK, name, version, digest, size, media_type, registrant, height, tx_hash)
    rounds(id PK, model, base_version, opener, min_updates, deadline, open_height,
           open_tx, status, strategy, result_version, closer, close_height, close_tx,
           cancel_reason)
    updates(id PK, round_id, twin, digest, size, samples, kind, height, tx_hash,
            included)                   index (round_id, id)
    aliases(model, alias, version_id)   PK(model, alias)
    epochs(epoch PK, boundary_height, members, set_hash, header_set_hash, source)
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Final

from eth_abi.abi import decode as abi_decode
from eth_abi.exceptions import DecodingError
from eth_hash.auto import keccak

from contracts import PREDEPLOYS, Role, load_artifact
from node.chain.block import Header
from node.chain.genesis import Genesis
from node.chain.store import ChainStore
from node.chain.types import Address, validator_set_hash
from node.errors import Conflict, InvalidInput, StorageError

__all__ = [
    "SCHEMA_VERSION",
    "AuditIndex",
    "DecodedEvent",
    "IndexInconsistent",
    "decode_log",
    "default_index_path",
]

SCHEMA_VERSION: Final = 1
#: Blocks indexed per SQLite transaction.
BATCH_BLOCKS: Final = 512

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS blocks (
    height INTEGER PRIMARY KEY, hash TEXT NOT NULL, timestamp INTEGER NOT NULL,
    proposer TEXT NOT NULL, epoch INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS blocks_timestamp ON blocks(timestamp);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY,
    height INTEGER NOT NULL, log_index INTEGER NOT NULL, timestamp INTEGER NOT NULL,
    tx_hash TEXT, tx_index INTEGER, sender TEXT,
    contract TEXT NOT NULL, name TEXT NOT NULL, actor TEXT,
    model TEXT, version_id INTEGER, round_id INTEGER, update_id INTEGER,
    dataset_id INTEGER, proposal_id INTEGER,
    args TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_model ON events(model, seq) WHERE model IS NOT NULL;
CREATE INDEX IF NOT EXISTS events_version ON events(version_id, seq)
    WHERE version_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS events_round ON events(round_id, seq) WHERE round_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS events_proposal ON events(proposal_id, seq)
    WHERE proposal_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS events_contract ON events(contract, height);
CREATE INDEX IF NOT EXISTS events_tx ON events(tx_hash);
CREATE TABLE IF NOT EXISTS event_accounts (
    address TEXT NOT NULL, seq INTEGER NOT NULL, relation TEXT NOT NULL,
    PRIMARY KEY (address, seq, relation)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS versions (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL, version INTEGER NOT NULL,
    digest TEXT NOT NULL, size INTEGER NOT NULL, format TEXT NOT NULL,
    round_id INTEGER, registrant TEXT NOT NULL, height INTEGER NOT NULL,
    tx_hash TEXT NOT NULL, status INTEGER NOT NULL, status_reason TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS versions_name ON versions(name, version);
CREATE TABLE IF NOT EXISTS version_parents (
    child INTEGER NOT NULL, position INTEGER NOT NULL, parent INTEGER NOT NULL,
    PRIMARY KEY (child, position)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS version_parents_parent ON version_parents(parent);
CREATE TABLE IF NOT EXISTS version_datasets (
    version_id INTEGER NOT NULL, position INTEGER NOT NULL, dataset_id INTEGER NOT NULL,
    PRIMARY KEY (version_id, position)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS datasets (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL, version INTEGER NOT NULL,
    digest TEXT NOT NULL, size INTEGER NOT NULL, media_type TEXT NOT NULL,
    registrant TEXT NOT NULL, height INTEGER NOT NULL, tx_hash TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS rounds (
    id INTEGER PRIMARY KEY, model TEXT NOT NULL, base_version INTEGER NOT NULL,
    opener TEXT NOT NULL, min_updates INTEGER NOT NULL, deadline INTEGER NOT NULL,
    open_height INTEGER NOT NULL, open_tx TEXT NOT NULL, status INTEGER NOT NULL,
    strategy TEXT, result_version INTEGER, closer TEXT, close_height INTEGER,
    close_tx TEXT, cancel_reason TEXT
);
CREATE INDEX IF NOT EXISTS rounds_result ON rounds(result_version)
    WHERE result_version IS NOT NULL;
CREATE TABLE IF NOT EXISTS updates (
    id INTEGER PRIMARY KEY, round_id INTEGER NOT NULL, twin TEXT NOT NULL,
    digest TEXT NOT NULL, size INTEGER NOT NULL, samples INTEGER NOT NULL,
    kind INTEGER NOT NULL, metrics_digest TEXT NOT NULL, height INTEGER NOT NULL,
    tx_hash TEXT NOT NULL, included INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS updates_round ON updates(round_id, id);
CREATE TABLE IF NOT EXISTS aliases (
    model TEXT NOT NULL, alias TEXT NOT NULL, version_id INTEGER NOT NULL,
    PRIMARY KEY (model, alias)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS epochs (
    epoch INTEGER PRIMARY KEY, boundary_height INTEGER, members TEXT NOT NULL,
    set_hash TEXT NOT NULL, header_set_hash TEXT, source TEXT NOT NULL
);
"""

_ZERO32: Final = "0x" + "00" * 32


class IndexInconsistent(Conflict):
    """The index and the chain store disagree (a reorg, a replaced or tampered store)."""


def default_index_path(data_dir: str | Path) -> Path:
    """``<data_dir>/audit/index.db``."""
    return Path(data_dir) / "audit" / "index.db"


def _hex(raw: bytes) -> str:
    return "0x" + bytes(raw).hex()


# ---------------------------------------------------------------- event decoding


def _abi_type(param: Mapping[str, Any]) -> str:
    kind = str(param["type"])
    if kind.startswith("tuple"):
        inner = ",".join(_abi_type(c) for c in param["components"])
        return f"({inner}){kind[len('tuple') :]}"
    return kind


@dataclass(frozen=True)
class _EventAbi:
    contract: str
    name: str
    indexed: tuple[tuple[str, str], ...]
    data: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class DecodedEvent:
    """A decoded contract log: contract and event name, arguments as JSON values."""

    contract: str
    name: str
    args: dict[str, Any]


@cache
def _event_table() -> dict[tuple[bytes, bytes], _EventAbi]:
    """(contract address, topic0) -> event ABI, for the three predeploys."""
    table: dict[tuple[bytes, bytes], _EventAbi] = {}
    for contract, address in PREDEPLOYS.items():
        raw_address = bytes.fromhex(address[2:])
        for entry in load_artifact(contract).abi:
            if entry.get("type") != "event":
                continue
            inputs = entry["inputs"]
            signature = f"{entry['name']}({','.join(_abi_type(i) for i in inputs)})"
            table[(raw_address, bytes(keccak(signature.encode())))] = _EventAbi(
                contract,
                entry["name"],
                tuple((i["name"], _abi_type(i)) for i in inputs if i["indexed"]),
                tuple((i["name"], _abi_type(i)) for i in inputs if not i["indexed"]),
            )
    return table


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return _hex(value)
    if isinstance(value, str) and value.startswith("0x") and len(value) == 42:
        return value.lower()  # eth_abi returns checksummed addresses
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def _topic_value(kind: str, topic: bytes) -> Any:
    """An indexed static argument from its topic (eth_abi's rules, without its overhead)."""
    if kind.startswith("uint"):
        return int.from_bytes(topic, "big")
    if kind == "address":
        if any(topic[:12]):
            raise ValueError("address topic with non-zero padding")
        return _hex(topic[12:])
    if kind == "bytes32":
        return topic
    (value,) = abi_decode([kind], topic)
    return value


def decode_log(address: bytes, topics: Sequence[bytes], data: bytes) -> DecodedEvent | None:
    """Decode a log of one of the predeployed contracts; None for anything else."""
    if not topics:
        return None
    abi = _event_table().get((bytes(address), bytes(topics[0])))
    if abi is None or len(topics) != 1 + len(abi.indexed):
        return None
    try:
        args: dict[str, Any] = {}
        for (name, kind), topic in zip(abi.indexed, topics[1:], strict=True):
            args[name] = _topic_value(kind, bytes(topic))
        values = abi_decode([k for _, k in abi.data], bytes(data))
        for (name, _), value in zip(abi.data, values, strict=True):
            args[name] = value
    except (DecodingError, ValueError, OverflowError):
        return None
    return DecodedEvent(abi.contract, abi.name, {k: _jsonable(v) for k, v in args.items()})


# ---------------------------------------------------------------- per-event bookkeeping

#: Which argument of each event names the account that acted (the tx sender is separate).
_ACTOR_ARG: Final[dict[str, str]] = {
    "DatasetRegistered": "registrant",
    "ModelVersionRegistered": "registrant",
    "AliasMoved": "actor",
    "VersionDeprecated": "actor",
    "VersionRevoked": "actor",
    "RoundOpened": "opener",
    "UpdatePushed": "twin",
    "RoundClosed": "closer",
    "RoundCancelled": "actor",
    "RoleGranted": "actor",
    "RoleRevoked": "actor",
    "ThresholdChanged": "actor",
    "ProposalCreated": "proposer",
    "ProposalApproved": "approver",
    "ProposalExecuted": "executor",
    "Staked": "account",
    "CandidateRegistered": "candidate",
    "Voted": "voter",
    "UnstakeRequested": "account",
    "Withdrawn": "account",
    "Jailed": "reporter",
    "Initialized": "initializer",
}
#: Arguments naming accounts an event is *about* (role grantee, jailed validator, ...).
_SUBJECT_ARGS: Final[dict[str, tuple[str, ...]]] = {
    "RoleGranted": ("account",),
    "RoleRevoked": ("account",),
    "ProposalCreated": ("account",),
    "ProposalExecuted": ("account",),
    "Voted": ("candidates",),
    "Jailed": ("validator",),
}
_ID_ARGS: Final[dict[str, tuple[str, ...]]] = {
    "version_id": ("version_id",),
    "round_id": ("round_id",),
    "update_id": ("update_id",),
    "dataset_id": ("dataset_id",),
    "proposal_id": ("proposal_id",),
}


@dataclass
class _Row:
    height: int
    log_index: int
    timestamp: int
    tx_hash: str | None
    tx_index: int | None
    sender: str | None
    event: DecodedEvent


class AuditIndex:
    """The audit index of one miner's chain store (see the module docstring).

    Thread-safe: one connection behind a lock; :meth:`update` may be called from any
    thread (the REST API calls it lazily before each query).
    """

    def __init__(
        self,
        chain_db: str | Path,
        genesis: Genesis,
        index_path: str | Path,
    ) -> None:
        """Open (creating if needed) the index at ``index_path`` for ``chain_db``.

        Raises :class:`InvalidInput` when the chain store is missing or belongs to
        another genesis, :class:`IndexInconsistent` when the index belongs to another
        chain.
        """
        self.chain_db = Path(chain_db)
        self.genesis = genesis
        self.path = Path(index_path)
        self.epoch_length = genesis.consensus.epoch_length
        self.engine = genesis.consensus.engine
        self._lock = threading.RLock()
        self._chain: ChainStore | None = None
        self._executor: Any = None
        if not self.chain_db.is_file():
            raise InvalidInput(f"{self.chain_db}: no chain store here")
        genesis_header = self._chain_store().header_by_height(0)
        if genesis_header is None or genesis_header.parent_hash != genesis.config_hash():
            raise InvalidInput(
                f"{self.chain_db}: the chain store does not belong to this genesis "
                "(its block 0 does not commit to the genesis document)"
            )
        self.genesis_hash = _hex(genesis_header.hash())
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InvalidInput(
                f"cannot create {self.path.parent}: {exc}; choose another index path"
            ) from exc
        try:
            self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.executescript(_SCHEMA)
            self._init_meta()
        except sqlite3.Error as exc:
            raise StorageError(f"{self.path}: cannot open the audit index: {exc}") from exc

    @classmethod
    def open(
        cls,
        data_dir: str | Path,
        genesis: str | Path | Genesis | None = None,
        index_path: str | Path | None = None,
    ) -> AuditIndex:
        """The index of the miner data directory ``data_dir`` (see
        :meth:`registry.audit.source.MinerData.open` for ``genesis``); the index file
        defaults to ``<data_dir>/audit/index.db``."""
        from registry.audit.source import MinerData

        if isinstance(genesis, Genesis):
            chain_db = Path(data_dir) / "chain.db"
            if not chain_db.is_file():
                raise InvalidInput(f"{data_dir}: no chain.db here (expected a miner's data dir)")
            loaded = genesis
        else:
            data = MinerData.open(data_dir, genesis)
            chain_db, loaded = data.chain_db, data.genesis
        path = Path(index_path) if index_path is not None else default_index_path(data_dir)
        return cls(chain_db, loaded, path)

    def close(self) -> None:
        """Close the index and the read-only chain connection."""
        with self._lock:
            self._conn.close()
            if self._chain is not None:
                self._chain.close()
                self._chain = None

    def __enter__(self) -> AuditIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ chain access

    def _chain_store(self) -> ChainStore:
        """The miner's chain store over a read-only SQLite connection."""
        if self._chain is None:
            uri = f"file:{self.chain_db.resolve()}?mode=ro"
            try:
                conn = sqlite3.connect(uri, uri=True, check_same_thread=False)
                row = conn.execute("SELECT header FROM blocks WHERE height = 0").fetchone()
            except sqlite3.Error as exc:
                raise InvalidInput(f"{self.chain_db}: cannot read the chain store: {exc}") from exc
            if row is None:
                raise InvalidInput(f"{self.chain_db}: the chain store has no genesis block")
            self._chain = ChainStore(conn, self.chain_db, Header.decode(row[0]))
        return self._chain

    def _raw(self) -> sqlite3.Connection:
        return self._chain_store()._conn

    def _read_members(self, at: Header) -> tuple[Address, ...]:
        from node.chain.executor import Executor

        if self._executor is None:
            self._executor = Executor(self._chain_store())
        contract, selector = (
            ("Membership", b"minersList()")
            if self.engine == "pbft"
            else ("Election", b"committee()")
        )
        address = Address(bytes.fromhex(PREDEPLOYS[contract][2:]))
        output = self._executor.call(address, keccak(selector)[:4], at=at)
        (members,) = abi_decode(["address[]"], output)
        return tuple(Address(bytes.fromhex(m[2:])) for m in members)

    # ------------------------------------------------------------ meta

    def _meta(self) -> dict[str, str]:
        return dict(self._conn.execute("SELECT key, value FROM meta").fetchall())

    def _init_meta(self) -> None:
        meta = self._meta()
        if meta:
            if meta.get("schema_version") != str(SCHEMA_VERSION):
                raise IndexInconsistent(
                    f"{self.path}: index schema {meta.get('schema_version')} is not "
                    f"{SCHEMA_VERSION}; rebuild it"
                )
            if meta.get("genesis_hash") != self.genesis_hash:
                raise IndexInconsistent(
                    f"{self.path}: the index was built for another chain "
                    f"(genesis {meta.get('genesis_hash')}, this store {self.genesis_hash}); "
                    "rebuild it"
                )
            return
        with self._transaction() as cur:
            self._write_genesis(cur)

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Cursor]:
        cur = self._conn.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            yield cur
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            raise

    def _write_genesis(self, cur: sqlite3.Cursor) -> None:
        g = self.genesis
        header = self._chain_store().header_by_height(0)
        assert header is not None
        cur.executemany(
            "INSERT INTO meta (key, value) VALUES (?, ?)",
            [
                ("schema_version", str(SCHEMA_VERSION)),
                ("genesis_hash", self.genesis_hash),
                ("chain_id", str(g.chain_id)),
                ("engine", self.engine),
                ("epoch_length", str(self.epoch_length)),
                ("indexed_height", "0"),
            ],
        )
        cur.execute(
            "INSERT INTO blocks (height, hash, timestamp, proposer, epoch) VALUES (0, ?, ?, ?, 0)",
            (self.genesis_hash, header.timestamp, _hex(header.proposer)),
        )
        roles: dict[bytes, int] = {bytes(a): int(Role.ADMIN) for a in g.admins}
        for account, role_bits in g.member_roles():
            roles[bytes(account)] = roles.get(bytes(account), 0) | role_bits
        for log_index, (member, bits) in enumerate(sorted(roles.items())):
            names = [r.name for r in Role if bits & r and r.name is not None]
            event = DecodedEvent(
                "Membership",
                "GenesisMember",
                {"account": _hex(member), "roles": bits, "role_names": names},
            )
            row = _Row(0, log_index, header.timestamp, None, None, None, event)
            seq = self._insert_event(cur, row, actor=None, ids={})
            cur.execute(
                "INSERT OR IGNORE INTO event_accounts VALUES (?, ?, 'subject')",
                (_hex(member), seq),
            )
        members = tuple(g.validators)
        for epoch in (0, 1):
            cur.execute(
                "INSERT INTO epochs VALUES (?, NULL, ?, ?, ?, 'genesis')",
                (
                    epoch,
                    json.dumps([_hex(m) for m in members]),
                    _hex(validator_set_hash(members)),
                    _hex(header.validator_set_hash) if epoch == 0 else None,
                ),
            )

    @property
    def indexed_height(self) -> int:
        """Height of the last indexed block."""
        with self._lock:
            row = self._conn.execute(
                "SELECT value FROM meta WHERE key = 'indexed_height'"
            ).fetchone()
        return int(row[0])

    def chain_height(self) -> int:
        """Height of the chain store's head right now."""
        with self._lock:
            row = self._raw().execute("SELECT MAX(height) FROM blocks").fetchone()
        return int(row[0])

    # ------------------------------------------------------------ update / rebuild

    def check_consistent(self) -> None:
        """Raise :class:`IndexInconsistent` unless the chain store still holds the last
        indexed block under the same hash."""
        height = self.indexed_height
        stored = self._conn.execute(
            "SELECT hash FROM blocks WHERE height = ?", (height,)
        ).fetchone()
        row = self._raw().execute("SELECT hash FROM blocks WHERE height = ?", (height,)).fetchone()
        if row is None:
            raise IndexInconsistent(
                f"the index is at height {height} but the chain store has no block "
                f"{height} (store replaced or truncated); rebuild the index"
            )
        if stored is None or _hex(row[0]) != stored[0]:
            raise IndexInconsistent(
                f"block {height}: the index recorded {stored[0] if stored else None} but the "
                f"chain store has {_hex(row[0])} (reorg, replaced or tampered store); "
                "rebuild the index or run `twinchain audit verify`"
            )

    def update(self, *, to_height: int | None = None) -> int:
        """Index the blocks committed since the last update; returns how many.

        Refuses (:class:`IndexInconsistent`) when the chain store no longer holds the
        last indexed block under the same hash. Cheap when nothing changed (two
        single-row reads).
        """
        with self._lock:
            self.check_consistent()
            start = self.indexed_height + 1
            head = self.chain_height()
            end = head if to_height is None else min(head, to_height)
            done = 0
            while start <= end:
                stop = min(end, start + BATCH_BLOCKS - 1)
                try:
                    self._index_range(start, stop)
                except sqlite3.Error as exc:
                    raise StorageError(f"indexing blocks {start}..{stop} failed: {exc}") from exc
                done += stop - start + 1
                start = self.indexed_height + 1
            return done

    def rebuild(self, *, to_height: int | None = None) -> int:
        """Forget everything and index the chain from genesis (to the head, or to
        ``to_height``); returns the number of blocks indexed."""
        with self._lock:
            with self._transaction() as cur:
                tables = [
                    r[0]
                    for r in cur.execute(
                        "SELECT name FROM sqlite_master WHERE type = 'table'"
                    ).fetchall()
                ]
                for table in tables:
                    cur.execute(f"DELETE FROM {table}")
                self._write_genesis(cur)
            return self.update(to_height=to_height)

    def _index_range(self, start: int, stop: int) -> None:
        raw = self._raw()
        blocks = raw.execute(
            "SELECT height, hash, header FROM blocks WHERE height BETWEEN ? AND ? ORDER BY height",
            (start, stop),
        ).fetchall()
        if len(blocks) != stop - start + 1:
            raise IndexInconsistent(f"the chain store is missing blocks in {start}..{stop}")
        addresses = [bytes.fromhex(a[2:]) for a in PREDEPLOYS.values()]
        logs = raw.execute(
            "SELECT l.height, l.log_index, l.tx_hash, l.tx_idx, t.sender, l.address, "
            "l.topic0, l.topic1, l.topic2, l.topic3, l.data FROM logs l "
            "JOIN transactions t ON t.hash = l.tx_hash "
            f"WHERE l.height BETWEEN ? AND ? AND l.address IN ({','.join('?' * len(addresses))}) "
            "ORDER BY l.height, l.log_index",
            (start, stop, *addresses),
        ).fetchall()
        by_height: dict[int, list[Any]] = {}
        for entry in logs:
            by_height.setdefault(int(entry[0]), []).append(entry)
        with self._transaction() as cur:
            done = cur.execute("SELECT value FROM meta WHERE key = 'indexed_height'").fetchone()
            if int(done[0]) != start - 1:
                return  # another process indexed these blocks meanwhile
            prev = cur.execute("SELECT hash FROM blocks WHERE height = ?", (start - 1,)).fetchone()
            for height, block_hash, header_bytes in blocks:
                header = Header.decode(header_bytes)
                if prev is not None and _hex(header.parent_hash) != prev[0]:
                    raise IndexInconsistent(
                        f"block {height}: its parent hash does not link to the indexed block "
                        f"{height - 1}; rebuild the index or run `twinchain audit verify`"
                    )
                prev = (_hex(block_hash),)
                cur.execute(
                    "INSERT INTO blocks VALUES (?, ?, ?, ?, ?)",
                    (
                        height,
                        _hex(block_hash),
                        header.timestamp,
                        _hex(header.proposer),
                        header.epoch,
                    ),
                )
                for entry in by_height.get(height, ()):
                    topics = [t for t in entry[6:10] if t is not None]
                    event = decode_log(entry[5], topics, entry[10])
                    if event is None:
                        continue
                    row = _Row(
                        height,
                        int(entry[1]),
                        header.timestamp,
                        _hex(entry[2]),
                        int(entry[3]),
                        _hex(entry[4]),
                        event,
                    )
                    self._apply(cur, row)
                if height % self.epoch_length == 0:
                    self._epoch_boundary(cur, header)
            cur.execute("UPDATE meta SET value = ? WHERE key = 'indexed_height'", (str(stop),))

    def _epoch_boundary(self, cur: sqlite3.Cursor, header: Header) -> None:
        """At block ``(k-1)E``: the set of epoch ``k``; and the header's own set hash."""
        e = self.epoch_length
        epoch_here = header.height // e
        cur.execute(
            "UPDATE epochs SET header_set_hash = ? WHERE epoch = ?",
            (_hex(header.validator_set_hash), epoch_here),
        )
        epoch = epoch_here + 1
        if epoch <= 1:
            return
        members = self._read_members(header)
        if members:
            source = (
                f"Membership.minersList() at block {header.height}"
                if self.engine == "pbft"
                else f"Election.committee() at block {header.height}"
            )
        else:
            previous = cur.execute(
                "SELECT members FROM epochs WHERE epoch = ?", (epoch - 1,)
            ).fetchone()
            members = tuple(Address(bytes.fromhex(m[2:])) for m in json.loads(previous[0]))
            source = f"unchanged: empty answer at block {header.height} keeps epoch {epoch - 1}'s"
        cur.execute(
            "INSERT OR REPLACE INTO epochs VALUES (?, ?, ?, ?, NULL, ?)",
            (
                epoch,
                header.height,
                json.dumps([_hex(m) for m in members]),
                _hex(validator_set_hash(members)),
                source,
            ),
        )

    def _insert_event(
        self, cur: sqlite3.Cursor, row: _Row, *, actor: str | None, ids: dict[str, Any]
    ) -> int:
        cur.execute(
            "INSERT INTO events (height, log_index, timestamp, tx_hash, tx_index, sender, "
            "contract, name, actor, model, version_id, round_id, update_id, dataset_id, "
            "proposal_id, args) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                row.height,
                row.log_index,
                row.timestamp,
                row.tx_hash,
                row.tx_index,
                row.sender,
                row.event.contract,
                row.event.name,
                actor,
                ids.get("model"),
                ids.get("version_id"),
                ids.get("round_id"),
                ids.get("update_id"),
                ids.get("dataset_id"),
                ids.get("proposal_id"),
                json.dumps(row.event.args, sort_keys=True),
            ),
        )
        seq = cur.lastrowid
        assert seq is not None
        return seq

    def _apply(self, cur: sqlite3.Cursor, row: _Row) -> None:
        """Store one decoded event and update the records it changes."""
        ev = row.event
        a = ev.args
        name = ev.name
        ids: dict[str, Any] = {}
        for column, keys in _ID_ARGS.items():
            for key in keys:
                if key in a and int(a[key]) != 0:
                    ids[column] = int(a[key])
        if ev.contract == "ModelRegistry":
            ids.update(self._registry_records(cur, row))
        actor_arg = _ACTOR_ARG.get(name)
        actor = str(a[actor_arg]) if actor_arg is not None and actor_arg in a else None
        seq = self._insert_event(cur, row, actor=actor, ids=ids)
        links: list[tuple[str, str]] = []
        if row.sender is not None:
            links.append((row.sender, "sender"))
        if actor is not None:
            links.append((actor, "actor"))
        for key in _SUBJECT_ARGS.get(name, ()):
            value = a.get(key)
            for account in value if isinstance(value, list) else [value]:
                if isinstance(account, str):
                    links.append((account, "subject"))
        cur.executemany(
            "INSERT OR IGNORE INTO event_accounts VALUES (?, ?, ?)",
            [(address, seq, relation) for address, relation in links],
        )

    def _registry_records(self, cur: sqlite3.Cursor, row: _Row) -> dict[str, Any]:
        """Maintain the registry tables; returns the event's model (and round) ids."""
        a = row.event.args
        name = row.event.name
        tx = row.tx_hash
        if name == "DatasetRegistered":
            cur.execute(
                "INSERT INTO datasets VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    a["dataset_id"],
                    a["name"],
                    a["version"],
                    a["digest"],
                    a["size"],
                    a["media_type"],
                    a["registrant"],
                    row.height,
                    tx,
                ),
            )
            return {}
        if name == "ModelVersionRegistered":
            vid = int(a["version_id"])
            cur.execute(
                "INSERT INTO versions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, '')",
                (
                    vid,
                    a["name"],
                    a["version"],
                    a["digest"],
                    a["size"],
                    a["format"],
                    a["round_id"] or None,
                    a["registrant"],
                    row.height,
                    tx,
                ),
            )
            cur.executemany(
                "INSERT INTO version_parents VALUES (?, ?, ?)",
                [(vid, i, p) for i, p in enumerate(a["parents"])],
            )
            cur.executemany(
                "INSERT INTO version_datasets VALUES (?, ?, ?)",
                [(vid, i, d) for i, d in enumerate(a["datasets"])],
            )
            return {"model": a["name"]}
        if name == "AliasMoved":
            if int(a["version_id"]) == 0:
                cur.execute(
                    "DELETE FROM aliases WHERE model = ? AND alias = ?", (a["model"], a["alias"])
                )
            else:
                cur.execute(
                    "INSERT OR REPLACE INTO aliases VALUES (?, ?, ?)",
                    (a["model"], a["alias"], a["version_id"]),
                )
            return {"model": a["model"]}
        if name in ("VersionDeprecated", "VersionRevoked"):
            status = 1 if name == "VersionDeprecated" else 2
            cur.execute(
                "UPDATE versions SET status = ?, status_reason = ? WHERE id = ?",
                (status, a["reason"], a["version_id"]),
            )
            return {"model": a["name"]}
        if name == "RoundOpened":
            cur.execute(
                "INSERT INTO rounds (id, model, base_version, opener, min_updates, deadline, "
                "open_height, open_tx, status) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0)",
                (
                    a["round_id"],
                    a["model"],
                    a["base_version"],
                    a["opener"],
                    a["min_updates"],
                    a["deadline"],
                    row.height,
                    tx,
                ),
            )
            return {"model": a["model"], "version_id": int(a["base_version"])}
        model = self._round_model(cur, int(a.get("round_id", 0)))
        if name == "UpdatePushed":
            cur.execute(
                "INSERT INTO updates VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0)",
                (
                    a["update_id"],
                    a["round_id"],
                    a["twin"],
                    a["digest"],
                    a["size"],
                    a["samples"],
                    a["kind"],
                    a["metrics_digest"],
                    row.height,
                    tx,
                ),
            )
            return {"model": model}
        if name == "RoundClosed":
            cur.execute(
                "UPDATE rounds SET status = 1, strategy = ?, result_version = ?, closer = ?, "
                "close_height = ?, close_tx = ? WHERE id = ?",
                (a["strategy"], a["version_id"], a["closer"], row.height, tx, a["round_id"]),
            )
            cur.executemany(
                "UPDATE updates SET included = 1 WHERE id = ?",
                [(u,) for u in a["included_update_ids"]],
            )
            return {"model": model}
        if name == "RoundCancelled":
            cur.execute(
                "UPDATE rounds SET status = 2, cancel_reason = ?, closer = ?, close_height = ?, "
                "close_tx = ? WHERE id = ?",
                (a["reason"], a["actor"], row.height, tx, a["round_id"]),
            )
            return {"model": model}
        return {}

    @staticmethod
    def _round_model(cur: sqlite3.Cursor, round_id: int) -> str | None:
        found = cur.execute("SELECT model FROM rounds WHERE id = ?", (round_id,)).fetchone()
        return None if found is None else str(found[0])

    # ------------------------------------------------------------ reads (for queries)

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run a read-only SQL query on the index (used by :mod:`registry.audit.queries`)."""
        with self._lock:
            try:
                return self._conn.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise StorageError(f"audit index query failed: {exc}") from exc

    def header(self, height: int) -> Header | None:
        """The chain store's header at ``height`` (None above the head)."""
        with self._lock:
            return self._chain_store().header_by_height(height)
