"""Durable chain storage: one SQLite database per node.

Theory of operation
-------------------
The database holds the committed chain and nothing else: blocks (header, raw
transactions, seal), receipts, logs, the state trie nodes and the indexes that JSON-RPC
and audit queries need. :meth:`ChainStore.commit` writes a block, its receipts, its logs,
its state nodes and its indexes in **one** SQLite transaction (WAL journal,
``synchronous=FULL``), so after a crash at any instant the database is at the last
committed block, and that block's state root is readable. The head is simply the block
with the greatest height: there is no separate head pointer that could disagree.

State nodes are content-addressed (key = keccak(value)); a node shared by many state
roots is stored once, and nothing is ever pruned, so every committed block's state stays
readable (historical ``eth_call``, audit re-execution, building on any stored parent).

Schema (version 1)::

    meta(key TEXT PK, value BLOB)                 schema_version, chain_id, genesis_hash
    blocks(height PK, hash UNIQUE, header, seal, tx_count)
    transactions(hash PK, height, idx, raw, sender, recipient, contract_address,
                 tx_type, status, gas_used, cumulative_gas_used, effective_gas_price,
                 log_start, log_count)            -- one row per tx, receipt included
    logs((height, log_index) PK, tx_idx, tx_hash, address, topic0..topic3, data)
        indexes: (address, height), (topicN, height) for N in 0..3
    state(key PK, value)                          -- trie nodes and contract code

The store never executes anything and never checks a seal; callers (the executor) hand
it blocks they have validated.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Final

from node.chain.block import Block, Header, transactions_root
from node.chain.genesis import Genesis, GenesisState, build_genesis
from node.chain.receipt import BlockLog, Log, Receipt, receipts_root
from node.chain.types import EMPTY_ROOT, Address, Hash32
from node.errors import InvalidBlock, InvalidInput, StorageError

__all__ = ["DEFAULT_LOG_LIMIT", "ChainStore", "ReceiptRecord", "TopicFilter"]

SCHEMA_VERSION: Final = 1

#: Most logs one query may return; a wider query must narrow its range or filter
#: (the same guard public Ethereum endpoints apply).
DEFAULT_LOG_LIMIT: Final = 10_000

#: One position of an ``eth_getLogs`` topic filter: None (any), a topic, or an OR-list.
TopicFilter = Hash32 | Sequence[Hash32] | None

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS blocks (
    height INTEGER PRIMARY KEY,
    hash BLOB NOT NULL UNIQUE,
    header BLOB NOT NULL,
    seal BLOB NOT NULL,
    tx_count INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS transactions (
    hash BLOB PRIMARY KEY,
    height INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    raw BLOB NOT NULL,
    sender BLOB NOT NULL,
    recipient BLOB,
    contract_address BLOB,
    tx_type INTEGER NOT NULL,
    status INTEGER NOT NULL,
    gas_used INTEGER NOT NULL,
    cumulative_gas_used INTEGER NOT NULL,
    effective_gas_price BLOB NOT NULL,
    log_start INTEGER NOT NULL,
    log_count INTEGER NOT NULL
) WITHOUT ROWID;
CREATE UNIQUE INDEX IF NOT EXISTS transactions_position ON transactions(height, idx);
CREATE TABLE IF NOT EXISTS logs (
    height INTEGER NOT NULL,
    log_index INTEGER NOT NULL,
    tx_idx INTEGER NOT NULL,
    tx_hash BLOB NOT NULL,
    address BLOB NOT NULL,
    topic0 BLOB, topic1 BLOB, topic2 BLOB, topic3 BLOB,
    data BLOB NOT NULL,
    PRIMARY KEY (height, log_index)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS logs_address ON logs(address, height);
CREATE INDEX IF NOT EXISTS logs_topic0 ON logs(topic0, height);
CREATE INDEX IF NOT EXISTS logs_topic1 ON logs(topic1, height);
CREATE INDEX IF NOT EXISTS logs_topic2 ON logs(topic2, height);
CREATE INDEX IF NOT EXISTS logs_topic3 ON logs(topic3, height);
CREATE TABLE IF NOT EXISTS state (key BLOB PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID;
"""

_TX_COLUMNS: Final = (
    "hash, height, idx, raw, sender, recipient, contract_address, tx_type, status, "
    "gas_used, cumulative_gas_used, effective_gas_price, log_start, log_count"
)
_TX_SELECT: Final = ", ".join("t." + c.strip() for c in _TX_COLUMNS.split(","))
_LOG_COLUMNS: Final = (
    "height, log_index, tx_idx, tx_hash, address, topic0, topic1, topic2, topic3, data"
)


@dataclass(frozen=True)
class ReceiptRecord:
    """A receipt placed in the chain (what ``eth_getTransactionReceipt`` returns)."""

    block_height: int
    block_hash: Hash32
    receipt: Receipt
    first_log_index: int  # block-wide index of the receipt's first log

    def block_logs(self) -> tuple[BlockLog, ...]:
        """The receipt's logs with their block-wide positions."""
        r = self.receipt
        return tuple(
            BlockLog(
                self.block_height,
                self.block_hash,
                r.tx_hash,
                r.tx_index,
                self.first_log_index + i,
                log,
            )
            for i, log in enumerate(r.logs)
        )


class ChainStore:
    """The node's durable chain: committed blocks, receipts, logs, state, indexes.

    Thread-safe (one connection behind a lock); open with :meth:`open`.
    """

    def __init__(self, conn: sqlite3.Connection, path: Path, genesis: Header) -> None:
        """Use :meth:`open`."""
        self._conn = conn
        self._lock = threading.RLock()
        self.path = path
        self.genesis_header = genesis
        self._head = self._load_head()

    # ------------------------------------------------------------ opening

    @classmethod
    def open(cls, path: str | Path, genesis: Genesis | GenesisState) -> ChainStore:
        """Open (creating if needed) the store at ``path`` for this genesis.

        A new database gets the genesis block and state. An existing one must belong to
        the same genesis (else StorageError), and its head's state root must be present.
        """
        built = genesis if isinstance(genesis, GenesisState) else build_genesis(genesis)
        path = Path(path)
        try:
            conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open chain store {path}: {exc}") from exc
        try:
            _initialize(conn, built)
            store = cls(conn, path, built.header)
            store._verify_head_state()
        except BaseException:
            conn.close()
            raise
        return store

    def close(self) -> None:
        """Close the database (checkpointing the WAL)."""
        with self._lock:
            self._conn.close()

    def __enter__(self) -> ChainStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _load_head(self) -> Header:
        row = self._one("SELECT header FROM blocks ORDER BY height DESC LIMIT 1")
        if row is None:
            raise StorageError(f"chain store {self.path} has no blocks")
        return Header.decode(row[0])

    def _verify_head_state(self) -> None:
        if not self.has_state(self._head.state_root):
            raise StorageError(
                f"head block {self._head.height} state root "
                f"0x{self._head.state_root.hex()} is missing from the store"
            )

    # ------------------------------------------------------------ reads

    @property
    def chain_id(self) -> int:
        """The network's chain id."""
        return self.genesis_header.chain_id

    @property
    def genesis_hash(self) -> Hash32:
        """Hash of block 0."""
        return self.genesis_header.hash()

    def head(self) -> Header:
        """Header of the last committed block."""
        return self._head

    def header_by_height(self, height: int) -> Header | None:
        """Committed header at ``height``, or None."""
        row = self._one("SELECT header FROM blocks WHERE height = ?", (height,))
        return None if row is None else Header.decode(row[0])

    def header_by_hash(self, block_hash: bytes) -> Header | None:
        """Committed header with this hash, or None."""
        row = self._one("SELECT header FROM blocks WHERE hash = ?", (bytes(block_hash),))
        return None if row is None else Header.decode(row[0])

    def height_of(self, block_hash: bytes) -> int | None:
        """Height of the committed block with this hash, or None."""
        row = self._one("SELECT height FROM blocks WHERE hash = ?", (bytes(block_hash),))
        return None if row is None else int(row[0])

    def block_by_height(self, height: int) -> Block | None:
        """Committed block (header, transactions, seal) at ``height``, or None."""
        with self._lock:
            row = self._one("SELECT header, seal FROM blocks WHERE height = ?", (height,))
            if row is None:
                return None
            txs = self._all("SELECT raw FROM transactions WHERE height = ? ORDER BY idx", (height,))
        return Block(Header.decode(row[0]), tuple(r[0] for r in txs), row[1])

    def block_by_hash(self, block_hash: bytes) -> Block | None:
        """Committed block with this hash, or None."""
        height = self.height_of(block_hash)
        return None if height is None else self.block_by_height(height)

    def tx_location(self, tx_hash: bytes) -> tuple[int, int] | None:
        """``(height, index)`` of a committed transaction, or None."""
        row = self._one("SELECT height, idx FROM transactions WHERE hash = ?", (bytes(tx_hash),))
        return None if row is None else (int(row[0]), int(row[1]))

    def raw_transaction(self, tx_hash: bytes) -> bytes | None:
        """Raw signed bytes of a committed transaction, or None."""
        row = self._one("SELECT raw FROM transactions WHERE hash = ?", (bytes(tx_hash),))
        return None if row is None else bytes(row[0])

    def receipt(self, tx_hash: bytes) -> ReceiptRecord | None:
        """Receipt of a committed transaction with its block context, or None."""
        with self._lock:
            row = self._one(
                f"SELECT {_TX_SELECT}, b.hash FROM transactions t "
                "JOIN blocks b ON b.height = t.height WHERE t.hash = ?",
                (bytes(tx_hash),),
            )
            if row is None:
                return None
            return self._receipt_record(row[:-1], Hash32(row[-1]))

    def receipts(self, height: int) -> list[Receipt]:
        """Receipts of the block at ``height``, in transaction order."""
        with self._lock:
            block_hash = self._one("SELECT hash FROM blocks WHERE height = ?", (height,))
            if block_hash is None:
                return []
            rows = self._all(
                f"SELECT {_TX_COLUMNS} FROM transactions WHERE height = ? ORDER BY idx",
                (height,),
            )
            return [self._receipt_record(r, Hash32(block_hash[0])).receipt for r in rows]

    def _receipt_record(self, row: Sequence[Any], block_hash: Hash32) -> ReceiptRecord:
        (
            tx_hash,
            height,
            idx,
            _raw,
            sender,
            recipient,
            created,
            tx_type,
            status,
            gas_used,
            cumulative,
            price,
            log_start,
            log_count,
        ) = row
        log_rows = self._all(
            "SELECT address, topic0, topic1, topic2, topic3, data FROM logs "
            "WHERE height = ? AND log_index >= ? AND log_index < ? ORDER BY log_index",
            (height, log_start, log_start + log_count),
        )
        receipt = Receipt(
            tx_hash=Hash32(tx_hash),
            tx_index=idx,
            tx_type=tx_type,
            sender=Address(sender),
            to=None if recipient is None else Address(recipient),
            contract_address=None if created is None else Address(created),
            status=status,
            gas_used=gas_used,
            cumulative_gas_used=cumulative,
            effective_gas_price=int.from_bytes(price, "big"),
            logs=tuple(_log_from_row(r) for r in log_rows),
        )
        return ReceiptRecord(height, block_hash, receipt, log_start)

    def logs(
        self,
        from_height: int,
        to_height: int,
        address: bytes | Sequence[bytes] | None = None,
        topics: Sequence[TopicFilter] | None = None,
        *,
        limit: int = DEFAULT_LOG_LIMIT,
    ) -> list[BlockLog]:
        """Logs in ``[from_height, to_height]`` matching an ``eth_getLogs`` filter.

        ``address`` is one address or an OR-list; ``topics`` is positional, each
        position None (any), a topic, or an OR-list of topics; positions past the end
        match anything. More than ``limit`` matches raise InvalidInput.
        """
        if from_height > to_height:
            raise InvalidInput(f"log query: from block {from_height} is after {to_height}")
        where = ["l.height BETWEEN ? AND ?"]
        params: list[Any] = [from_height, to_height]
        if address is not None:
            addresses = [address] if isinstance(address, bytes) else list(address)
            if addresses:  # an empty OR-list means "any", as in eth_getLogs
                where.append(_in_clause("l.address", addresses, params))
        for position, wanted in enumerate(topics or ()):
            if position > 3:
                raise InvalidInput("log query: at most 4 topic positions")
            if wanted is None:
                continue
            options = [wanted] if isinstance(wanted, bytes) else list(wanted)
            if options:
                where.append(_in_clause(f"l.topic{position}", options, params))
        params.append(limit + 1)
        rows = self._all(
            f"SELECT l.height, b.hash, l.tx_hash, l.tx_idx, l.log_index, l.address, "
            f"l.topic0, l.topic1, l.topic2, l.topic3, l.data "
            f"FROM logs l JOIN blocks b ON b.height = l.height "
            f"WHERE {' AND '.join(where)} ORDER BY l.height, l.log_index LIMIT ?",
            params,
        )
        if len(rows) > limit:
            raise InvalidInput(
                f"log query matches more than {limit} logs; narrow the block range or filter"
            )
        return [
            BlockLog(r[0], Hash32(r[1]), Hash32(r[2]), r[3], r[4], _log_from_row(r[5:]))
            for r in rows
        ]

    def state_node(self, key: bytes) -> bytes | None:
        """A state trie node or code blob by its keccak key, or None."""
        row = self._one("SELECT value FROM state WHERE key = ?", (bytes(key),))
        return None if row is None else bytes(row[0])

    def has_state(self, state_root: bytes) -> bool:
        """True if the root node of ``state_root`` is stored (empty trie included)."""
        return state_root == EMPTY_ROOT or self.state_node(state_root) is not None

    # ------------------------------------------------------------ commit

    def commit(
        self,
        block: Block,
        receipts: Sequence[Receipt],
        state_writes: Mapping[bytes, bytes],
    ) -> None:
        """Append ``block`` as the new head, atomically with everything it implies.

        ``block`` must extend the head; ``receipts`` are its receipts in order;
        ``state_writes`` are the trie nodes its execution created. Either all of it is
        durable when this returns, or (on any error) none of it is.
        """
        with self._lock:
            head = self._head
            header = block.header
            if header.height != head.height + 1 or header.parent_hash != head.hash():
                raise InvalidBlock(
                    f"block {header.height} (parent 0x{header.parent_hash.hex()}) does not "
                    f"extend the head {head.height} (0x{head.hash().hex()})"
                )
            _check_receipts(block, receipts)
            if header.state_root not in state_writes and not self.has_state(header.state_root):
                raise StorageError(
                    f"block {header.height}: state root 0x{header.state_root.hex()} is "
                    "neither in the block's state writes nor in the store"
                )
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    _insert_block(self._conn, block, receipts, state_writes)
                    self._conn.execute("COMMIT")
                except BaseException:
                    self._conn.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise StorageError(f"cannot commit block {header.height}: {exc}") from exc
            self._head = header

    # ------------------------------------------------------------ integrity

    def check_integrity(self, *, from_height: int = 0) -> int:
        """Walk blocks from ``from_height`` to the head and check links and indexes.

        Checks: consecutive heights, parent hashes, stored hash = header hash, tx rows
        and count, receipts root, logs count and the head's state root. Returns the
        number of blocks checked; raises StorageError at the first inconsistency.
        """
        checked = 0
        previous = self.header_by_height(from_height - 1) if from_height > 0 else None
        for height in range(from_height, self._head.height + 1):
            block = self.block_by_height(height)
            if block is None:
                raise StorageError(f"block {height} is missing below the head")
            header = block.header
            if previous is not None and header.parent_hash != previous.hash():
                raise StorageError(f"block {height}: parent hash does not link")
            if self.height_of(header.hash()) != height:
                raise StorageError(f"block {height}: hash index disagrees")
            if height > 0:
                if transactions_root(block.transactions) != header.transactions_root:
                    raise StorageError(f"block {height}: transactions do not match the root")
                receipts = self.receipts(height)
                if receipts_root(receipts) != header.receipts_root:
                    raise StorageError(f"block {height}: receipts do not match the root")
                for i, tx_hash in enumerate(block.tx_hashes):
                    if self.tx_location(tx_hash) != (height, i):
                        raise StorageError(f"block {height}: tx index {i} disagrees")
            previous = header
            checked += 1
        self._verify_head_state()
        return checked

    # ------------------------------------------------------------ sqlite helpers

    def _one(self, sql: str, params: Sequence[Any] = ()) -> Any:
        with self._lock:
            try:
                return self._conn.execute(sql, params).fetchone()
            except sqlite3.Error as exc:
                raise StorageError(f"chain store read failed: {exc}") from exc

    def _all(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        with self._lock:
            try:
                return self._conn.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise StorageError(f"chain store read failed: {exc}") from exc


# ---------------------------------------------------------------- module helpers


def _initialize(conn: sqlite3.Connection, genesis: GenesisState) -> None:
    """Write genesis into an empty database, or check an existing one matches it."""
    meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
    expected_hash = genesis.header.hash()
    if meta:
        if int(meta.get("schema_version", -1)) != SCHEMA_VERSION:
            raise StorageError(
                f"chain store schema {meta.get('schema_version')} is not {SCHEMA_VERSION}"
            )
        if meta.get("genesis_hash") != expected_hash:
            raise StorageError("chain store belongs to a different genesis (network)")
        return
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(
            "INSERT INTO meta (key, value) VALUES (?, ?)",
            [
                ("schema_version", SCHEMA_VERSION),
                ("chain_id", genesis.config.chain_id),
                ("genesis_hash", expected_hash),
            ],
        )
        _insert_block(conn, genesis.block, (), genesis.state_writes)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _insert_block(
    conn: sqlite3.Connection,
    block: Block,
    receipts: Sequence[Receipt],
    state_writes: Mapping[bytes, bytes],
) -> None:
    header = block.header
    height = header.height
    conn.execute(
        "INSERT INTO blocks (height, hash, header, seal, tx_count) VALUES (?, ?, ?, ?, ?)",
        (height, header.hash(), header.encode(), block.seal, len(block.transactions)),
    )
    tx_rows = []
    log_rows: list[tuple[Any, ...]] = []
    for raw, receipt in zip(block.transactions, receipts, strict=True):
        tx_rows.append(
            (
                receipt.tx_hash,
                height,
                receipt.tx_index,
                raw,
                receipt.sender,
                receipt.to,
                receipt.contract_address,
                receipt.tx_type,
                receipt.status,
                receipt.gas_used,
                receipt.cumulative_gas_used,
                _uint_bytes(receipt.effective_gas_price),
                len(log_rows),
                len(receipt.logs),
            )
        )
        for log in receipt.logs:
            topics = list(log.topics) + [None] * (4 - len(log.topics))
            log_rows.append(
                (
                    height,
                    len(log_rows),
                    receipt.tx_index,
                    receipt.tx_hash,
                    log.address,
                    *topics,
                    log.data,
                )
            )
    conn.executemany(f"INSERT INTO transactions ({_TX_COLUMNS}) VALUES ({_marks(14)})", tx_rows)
    conn.executemany(f"INSERT INTO logs ({_LOG_COLUMNS}) VALUES ({_marks(10)})", log_rows)
    conn.executemany("INSERT OR IGNORE INTO state (key, value) VALUES (?, ?)", state_writes.items())


def _check_receipts(block: Block, receipts: Sequence[Receipt]) -> None:
    if len(receipts) != len(block.transactions):
        raise InvalidBlock(
            f"block {block.height}: {len(receipts)} receipts for "
            f"{len(block.transactions)} transactions"
        )
    for i, (tx_hash, receipt) in enumerate(zip(block.tx_hashes, receipts, strict=True)):
        if receipt.tx_hash != tx_hash or receipt.tx_index != i:
            raise InvalidBlock(f"block {block.height}: receipt {i} is for another transaction")
        if len(receipt.logs) and any(len(log.topics) > 4 for log in receipt.logs):
            raise InvalidBlock(f"block {block.height}: receipt {i} has a log with > 4 topics")


def _log_from_row(row: Sequence[Any]) -> Log:
    address, t0, t1, t2, t3, data = row
    return Log(Address(address), tuple(Hash32(t) for t in (t0, t1, t2, t3) if t is not None), data)


def _in_clause(column: str, values: Iterable[bytes], params: list[Any]) -> str:
    items = [bytes(v) for v in values]
    params.extend(items)
    return f"{column} IN ({_marks(len(items))})"


def _marks(n: int) -> str:
    return ", ".join("?" * n)


def _uint_bytes(value: int) -> bytes:
    return value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big")
