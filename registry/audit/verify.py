"""Verify a miner's stored chain from its bytes: links, roots, certificates, validator sets.

Theory of operation
-------------------
:func:`verify_chain` opens ``chain.db`` **read-only** and reads the raw stored bytes with
plain SQL (never the store's decoded objects), in batches of heights. For every height
in range it checks, in this order, and stops at the first failure:

1. the header decodes (canonical RLP), ``keccak(header)`` equals the stored hash, the
   height, chain id and epoch (``height // E``) are right, and ``parent_hash`` is the
   previous block's hash (block 0 must be byte-identical to the genesis built from
   ``genesis.json``);
2. ``validator_set_hash`` is the hash of the epoch's set, derived from genesis (below);
3. the stored transactions: each row's hash is ``keccak(raw)``, positions are 0..n-1,
   the count matches, and ``transactions_root`` is the trie root over the raw bytes;
4. the stored receipts and logs: positions and log ranges are consistent, gas used per
   transaction is the cumulative difference, and ``receipts_root`` (over Ethereum's
   consensus encoding), ``logs_bloom`` and ``gas_used`` match the header. Empty blocks
   are compared to the empty-trie root without building anything;
5. the seal is a commit certificate for this hash and height, of the engine's commit
   kind, whose signatures are all valid (secp256k1 recovery over the vote sighash), by
   distinct members of the epoch's validator set, and at least a quorum.

**Validator sets** follow genesis: epochs 0 and 1 use the genesis validators; the set of
epoch ``k >= 2`` is the answer of ``minersList()`` / ``committee()`` executed with py-evm
against the state of block ``(k-1)E`` (empty answer: the previous set). That state is
read through the stored trie nodes, each checked against its keccak, so an altered state
node is reported at its boundary block. Boundary blocks below the verified range are
checked as a light client does (hash and certificate under the previous set).

``reexecute=True`` also re-executes every block from genesis with py-evm into a fresh
in-memory store and compares state root, receipts root, bloom and gas (the executor's
own validation), and every stored receipt field (sender, recipient, created contract,
gas used, price, logs) with what execution produced.

The result is a :class:`VerifyReport`: ok, or the first failing height with the field
and a precise reason.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Final, Protocol

import coincurve
import rlp
from eth_hash.auto import keccak

from node.chain.block import BLOOM_BYTES, EMPTY_BLOOM, Block, Header
from node.chain.genesis import Genesis, build_genesis
from node.chain.store import ChainStore
from node.chain.types import EMPTY_ROOT, Address, Hash32
from node.consensus.certificate import commit_kind
from node.consensus.messages import DOMAIN, EngineId
from node.consensus.types import EMPTY_PAYLOAD_HASH, ValidatorSet
from node.errors import InvalidBlock, TwinChainError
from registry.audit.source import MinerData
from registry.audit.witness import WitnessError, record_members

__all__ = [
    "BATCH",
    "ChainReader",
    "Failure",
    "StoredBlock",
    "VerificationFailed",
    "VerifyReport",
    "check_certificate",
    "genesis_header",
    "list_trie_root",
    "rlp_encode",
    "stored_receipts",
    "verify_chain",
]

try:  # safe-pysha3's C Keccak is ~4x faster than eth-hash's pycryptodome backend
    import sha3 as _sha3
except ImportError:  # pragma: no cover - same function, slower
    _sha3 = None


def _keccak(data: bytes) -> bytes:
    """Keccak-256 (Ethereum's), through the fastest backend installed."""
    if _sha3 is not None:
        return bytes(_sha3.keccak_256(data).digest())
    return bytes(keccak(data))


#: Heights read per SQL batch.
BATCH: Final = 512

_TX_SQL: Final = (
    "SELECT height, hash, idx, raw, sender, recipient, contract_address, tx_type, status, "
    "gas_used, cumulative_gas_used, effective_gas_price, log_start, log_count "
    "FROM transactions WHERE height BETWEEN ? AND ? ORDER BY height, idx"
)
_LOG_SQL: Final = (
    "SELECT height, log_index, tx_idx, tx_hash, address, topic0, topic1, topic2, topic3, data "
    "FROM logs WHERE height BETWEEN ? AND ? ORDER BY height, log_index"
)


class VerificationFailed(Exception):
    """A check failed at ``height``; ``field`` names what was wrong."""

    def __init__(self, height: int, field: str, message: str) -> None:
        super().__init__(f"block {height}: {message}")
        self.height = height
        self.field = field
        self.message = message


@dataclass(frozen=True)
class Failure:
    """The first failing height, the field and the reason."""

    height: int
    field: str
    message: str

    def __str__(self) -> str:
        return f"block {self.height}: {self.message}"


@dataclass
class VerifyReport:
    """Outcome of :func:`verify_chain`."""

    chain_id: int
    genesis_hash: Hash32
    from_height: int
    to_height: int
    reexecuted: bool
    checked: int = 0
    signatures: int = 0
    transactions: int = 0
    seconds: float = 0.0
    epochs: dict[int, tuple[Address, ...]] = field(default_factory=dict)
    failure: Failure | None = None

    @property
    def ok(self) -> bool:
        """True when every block in range passed."""
        return self.failure is None

    @property
    def blocks_per_second(self) -> float:
        """Throughput of this run."""
        return self.checked / self.seconds if self.seconds > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        """JSON form (``--json``)."""
        return {
            "ok": self.ok,
            "chain_id": self.chain_id,
            "genesis_hash": "0x" + self.genesis_hash.hex(),
            "from": self.from_height,
            "to": self.to_height,
            "reexecuted": self.reexecuted,
            "blocks_checked": self.checked,
            "transactions": self.transactions,
            "signatures_checked": self.signatures,
            "seconds": round(self.seconds, 3),
            "blocks_per_second": round(self.blocks_per_second, 1),
            "validator_sets": {
                str(e): ["0x" + m.hex() for m in members] for e, members in self.epochs.items()
            },
            "failure": None
            if self.failure is None
            else {
                "height": self.failure.height,
                "field": self.failure.field,
                "message": str(self.failure),
            },
        }


@dataclass
class StoredBlock:
    """One height's stored rows, undecoded: what the verifier checks."""

    height: int
    hash: bytes
    header: bytes
    seal: bytes
    tx_count: int
    txs: list[tuple[Any, ...]] = field(default_factory=list)  # _TX_SQL columns minus height
    logs: list[tuple[Any, ...]] = field(default_factory=list)  # _LOG_SQL columns minus height


class BlockSource(Protocol):
    """Where stored blocks come from (a miner's ``chain.db`` or an export directory)."""

    def head_height(self) -> int:
        """Highest stored height."""
        ...

    def blocks(self, first: int, last: int) -> Iterator[StoredBlock]:
        """Stored blocks ``first..last`` in height order (a gap is simply absent)."""
        ...


class ChainReader:
    """Read-only raw SQL access to a miner's ``chain.db``."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        uri = f"file:{self.path.resolve()}?mode=ro"
        try:
            self.conn = sqlite3.connect(uri, uri=True, check_same_thread=False)
            self.conn.execute("SELECT 1 FROM blocks LIMIT 1").fetchall()
        except sqlite3.Error as exc:
            raise TwinChainError(f"cannot open {self.path} read-only: {exc}") from exc

    def close(self) -> None:
        """Close the connection."""
        self.conn.close()

    def __enter__(self) -> ChainReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def meta(self) -> dict[str, Any]:
        """The ``meta`` table (schema_version, chain_id, genesis_hash)."""
        return dict(self.conn.execute("SELECT key, value FROM meta").fetchall())

    def head_height(self) -> int:
        """Highest stored height (-1 for an empty store)."""
        row = self.conn.execute("SELECT MAX(height) FROM blocks").fetchone()
        return -1 if row[0] is None else int(row[0])

    def block_row(self, height: int) -> tuple[bytes, bytes, bytes] | None:
        """``(hash, header, seal)`` stored at ``height``."""
        row = self.conn.execute(
            "SELECT hash, header, seal FROM blocks WHERE height = ?", (height,)
        ).fetchone()
        return None if row is None else (bytes(row[0]), bytes(row[1]), bytes(row[2]))

    def state_node(self, key: bytes) -> bytes | None:
        """A stored trie node or code blob by key (unchecked; see ``checked_lookup``)."""
        row = self.conn.execute("SELECT value FROM state WHERE key = ?", (bytes(key),)).fetchone()
        return None if row is None else bytes(row[0])

    def tx_location(self, tx_hash: bytes) -> tuple[int, int] | None:
        """``(height, index)`` of a stored transaction."""
        row = self.conn.execute(
            "SELECT height, idx FROM transactions WHERE hash = ?", (bytes(tx_hash),)
        ).fetchone()
        return None if row is None else (int(row[0]), int(row[1]))

    def blocks(self, first: int, last: int) -> Iterator[StoredBlock]:
        """Stored blocks ``first..last`` with their transaction and log rows, batched."""
        for start in range(first, last + 1, BATCH):
            end = min(last, start + BATCH - 1)
            rows = self.conn.execute(
                "SELECT height, hash, header, seal, tx_count FROM blocks "
                "WHERE height BETWEEN ? AND ? ORDER BY height",
                (start, end),
            ).fetchall()
            by_height = {
                r[0]: StoredBlock(r[0], bytes(r[1]), bytes(r[2]), bytes(r[3]), r[4]) for r in rows
            }
            if any(r[4] for r in rows):
                for t in self.conn.execute(_TX_SQL, (start, end)):
                    target = by_height.get(t[0])
                    if target is None:
                        raise VerificationFailed(
                            t[0], "transactions", "transaction rows exist for a missing block"
                        )
                    target.txs.append(t[1:])
                for lg in self.conn.execute(_LOG_SQL, (start, end)):
                    target = by_height.get(lg[0])
                    if target is None:
                        raise VerificationFailed(
                            lg[0], "logs", "log rows exist for a missing block"
                        )
                    target.logs.append(lg[1:])
            else:
                stray = self.conn.execute(
                    "SELECT MIN(height) FROM (SELECT height FROM transactions WHERE height "
                    "BETWEEN ? AND ? UNION ALL SELECT height FROM logs WHERE height "
                    "BETWEEN ? AND ?)",
                    (start, end, start, end),
                ).fetchone()[0]
                if stray is not None:
                    raise VerificationFailed(
                        stray, "transactions", "the block stores 0 transactions but rows exist"
                    )
            yield from by_height.values()


# ---------------------------------------------------------------- checks shared with bundles


_Certificate = tuple[int, int, int, int, bytes, list[tuple[bytes, bytes]]]

#: RLP of one ``[signer(20), signature(65)]`` pair: list of 88 payload bytes, a 20-byte
#: string, then a 65-byte string — 90 bytes, the only canonical encoding of such a pair.
_PAIR_HEAD: Final = b"\xf8\x58\x94"
_SIG_HEAD: Final = b"\xb8\x41"
_PAIR_LEN: Final = 90


def _list_payload(data: bytes, pos: int) -> tuple[int, int] | None:
    """``(payload start, payload length)`` of the canonical RLP list at ``pos``, or None."""
    b = data[pos]
    if 0xC0 <= b <= 0xF7:
        return pos + 1, b - 0xC0
    if b == 0xF8 and data[pos + 1] >= 56:
        return pos + 2, data[pos + 1]
    if b == 0xF9 and data[pos + 1]:
        return pos + 3, (data[pos + 1] << 8) | data[pos + 2]
    return None


def _fast_certificate(seal: bytes) -> _Certificate | None:
    """Slice-based decoding of a certificate in its usual canonical shape (short
    integers, a 32-byte hash, 90-byte signer pairs), with no intermediate objects. None
    for anything else: the caller then decodes with ``rlp`` (which gives the precise
    error). Whatever this accepts, ``rlp.decode(strict=True)`` decodes to the same values."""
    try:
        outer = _list_payload(seal, 0)
        if outer is None or outer[0] + outer[1] != len(seal):
            return None
        pos = outer[0]
        ints: list[int] = []
        for _ in range(4):
            b = seal[pos]
            if b < 0x80:
                ints.append(b)
                pos += 1
                continue
            size = b - 0x80
            if size > 8 or (size == 1 and seal[pos + 1] < 0x80):
                return None
            end = pos + 1 + size
            if end > len(seal):
                return None
            ints.append(int.from_bytes(seal[pos + 1 : end], "big"))
            pos = end
        if seal[pos] != 0xA0:
            return None
        block_hash = seal[pos + 1 : pos + 33]
        inner = _list_payload(seal, pos + 33)
        if inner is None or inner[0] + inner[1] != len(seal) or inner[1] % _PAIR_LEN:
            return None
        pairs: list[tuple[bytes, bytes]] = []
        for at in range(inner[0], len(seal), _PAIR_LEN):
            if seal[at : at + 3] != _PAIR_HEAD or seal[at + 23 : at + 25] != _SIG_HEAD:
                return None
            pairs.append((seal[at + 3 : at + 23], seal[at + 25 : at + _PAIR_LEN]))
    except IndexError:
        return None
    return ints[0], ints[1], ints[2], ints[3], block_hash, pairs


def _decode_certificate(seal: bytes, height: int) -> _Certificate:
    """The seal's ``[engine, kind, height, round, block_hash, [[signer, signature]...]]``
    (the same acceptance as ``CommitCertificate.decode``, without building objects)."""
    fast = _fast_certificate(seal)
    if fast is not None:
        return fast
    try:
        engine, kind, cert_height, round_, block_hash, sigs = rlp.decode(seal, strict=True)
        pairs = [(bytes(a), bytes(b)) for a, b in sigs]
        ints = [int.from_bytes(x, "big") for x in (engine, kind, cert_height, round_)]
    except (rlp.exceptions.RLPException, ValueError, TypeError) as exc:
        raise VerificationFailed(
            height, "certificate", f"certificate: malformed certificate: {exc}"
        ) from exc
    if (
        not isinstance(block_hash, bytes)
        or len(block_hash) != 32
        or any(len(a) != 20 or len(b) != 65 for a, b in pairs)
    ):
        raise VerificationFailed(
            height, "certificate", "certificate: malformed certificate: bad field length"
        )
    return ints[0], ints[1], ints[2], ints[3], block_hash, pairs


#: Public key (65 bytes, uncompressed) -> address: each validator's key is hashed once.
_ADDRESSES: dict[bytes, bytes] = {}


def _signer_of(digest: bytes, signature: bytes) -> bytes | None:
    """Address recovered from a 65-byte ``r || s || v`` signature (v in {0, 1})."""
    if signature[64] > 1:
        return None
    try:
        public = coincurve.PublicKey.from_signature_and_message(
            signature, digest, hasher=None
        ).format(compressed=False)
    except Exception:  # coincurve raises bare Exception on bad input
        return None
    address = _ADDRESSES.get(public)
    if address is None:
        address = _keccak(public[1:])[-20:]
        if len(_ADDRESSES) < 4096:
            _ADDRESSES[public] = address
    return address


def check_certificate(
    seal: bytes,
    block_hash: bytes,
    height: int,
    chain_id: int,
    engine: EngineId,
    vset: ValidatorSet,
) -> int:
    """Check ``seal`` certifies ``block_hash`` at ``height`` under ``vset``.

    The seal must decode, be of the engine's commit kind, name this hash and height, and
    carry valid signatures over the commit-vote sighash by distinct members of ``vset``,
    at least a quorum. Returns the number of signatures checked; raises
    :class:`VerificationFailed` (field ``certificate``) naming the failing part.
    """
    c_engine, c_kind, c_height, c_round, c_hash, pairs = _decode_certificate(seal, height)
    expected_kind = commit_kind(engine)
    if c_engine != engine or c_kind != expected_kind:
        raise VerificationFailed(
            height,
            "certificate",
            f"certificate is engine {c_engine} kind {c_kind}, expected engine "
            f"{int(engine)} kind {int(expected_kind)}",
        )
    if c_hash != block_hash:
        raise VerificationFailed(
            height,
            "certificate",
            f"certificate is for block hash 0x{c_hash.hex()}, not 0x{bytes(block_hash).hex()}",
        )
    if c_height != height:
        raise VerificationFailed(
            height, "certificate", f"certificate is for height {c_height}, not {height}"
        )
    digest = _keccak(
        DOMAIN
        + b"".join(v.to_bytes(32, "big") for v in (chain_id, c_engine, c_kind, c_height, c_round))
        + c_hash
        + EMPTY_PAYLOAD_HASH
    )
    seen: set[bytes] = set()
    for i, (signer, signature) in enumerate(pairs):
        who = f"certificate signature {i} by 0x{signer.hex()}"
        if signer in seen:
            raise VerificationFailed(height, "certificate", f"{who} is a duplicate signer")
        if signer not in vset:
            raise VerificationFailed(
                height,
                "certificate",
                f"{who} is not a member of epoch {vset.epoch}'s validator set",
            )
        if _signer_of(digest, signature) != signer:
            raise VerificationFailed(height, "certificate", f"{who} is invalid")
        seen.add(signer)
    if len(seen) < vset.quorum:
        raise VerificationFailed(
            height,
            "certificate",
            f"certificate has {len(seen)} signatures, epoch {vset.epoch} needs a quorum of "
            f"{vset.quorum} of {vset.n}",
        )
    return len(seen)


_INT_POSITIONS: Final = frozenset({0, 2, 3, 5, 11, 12})


def decode_header(raw: bytes, height: int) -> Header:
    """Decode stored header bytes (canonical RLP, exactly as ``Header.decode`` accepts);
    VerificationFailed (field ``header``) if malformed."""
    try:
        items = rlp.decode(raw, strict=True)
    except rlp.exceptions.RLPException as exc:
        raise VerificationFailed(height, "header", f"header does not decode: {exc}") from exc
    if not isinstance(items, list) or len(items) != 13:
        raise VerificationFailed(height, "header", "header does not decode: not a 13-field list")
    values: list[Any] = []
    for i, item in enumerate(items):
        if not isinstance(item, bytes):
            raise VerificationFailed(height, "header", f"header does not decode: field {i}")
        if i in _INT_POSITIONS:
            if item[:1] == b"\x00":
                raise VerificationFailed(
                    height, "header", f"header does not decode: field {i} has leading zeros"
                )
            values.append(int.from_bytes(item, "big"))
        else:
            values.append(item)
    try:
        return Header.from_fields(values)
    except TwinChainError as exc:
        raise VerificationFailed(height, "header", f"header does not decode: {exc}") from exc


def check_boundary(
    height: int,
    header_bytes: bytes,
    seal: bytes,
    genesis: Genesis,
    previous: ValidatorSet,
) -> Header:
    """Light-client check of a boundary block ``height`` under ``previous`` (its epoch's
    set): the header decodes, is at this height/chain/epoch, commits to ``previous`` and
    carries a valid certificate over ``keccak(header)``."""
    header = decode_header(header_bytes, height)
    check_header_fields(header, height, genesis, previous)
    check_certificate(
        seal, _keccak(header_bytes), height, genesis.chain_id, engine_id(genesis), previous
    )
    return header


def check_header_fields(
    header: Header,
    height: int,
    genesis: Genesis,
    vset: ValidatorSet,
    set_hash: bytes | None = None,
) -> None:
    """Height, chain id, epoch and validator-set hash of a header at ``height``
    (``set_hash``: ``vset.hash()`` when the caller already has it)."""
    if header.height != height:
        raise VerificationFailed(height, "height", f"header says height {header.height}")
    if header.chain_id != genesis.chain_id:
        raise VerificationFailed(
            height, "chain_id", f"chain_id {header.chain_id}, genesis says {genesis.chain_id}"
        )
    epoch = height // genesis.consensus.epoch_length
    if header.epoch != epoch:
        raise VerificationFailed(height, "epoch", f"epoch {header.epoch}, expected {epoch}")
    if set_hash is None:
        set_hash = vset.hash()
    if header.validator_set_hash != set_hash:
        raise VerificationFailed(
            height,
            "validator_set_hash",
            f"validator_set_hash mismatch (header 0x{header.validator_set_hash.hex()} "
            f"epoch {epoch}'s set 0x{set_hash.hex()})",
        )


@lru_cache(maxsize=8)
def genesis_header(genesis: Genesis) -> Header:
    """Block 0 built from ``genesis`` (memoised: building executes the predeploys)."""
    return build_genesis(genesis).header


def engine_id(genesis: Genesis) -> EngineId:
    """The consensus engine of a network."""
    return EngineId.PBFT if genesis.consensus.engine == "pbft" else EngineId.DPOS


def genesis_set(genesis: Genesis, epoch: int) -> ValidatorSet:
    """The set of epoch 0 or 1."""
    return ValidatorSet(epoch, tuple(Address(a) for a in genesis.validators))


def next_set(
    epoch: int, members: Sequence[Address], previous: ValidatorSet, height: int
) -> ValidatorSet:
    """Epoch ``epoch``'s set from the call's answer (empty: keep the previous members)."""
    try:
        return ValidatorSet(epoch, tuple(members) or previous.members)
    except ValueError as exc:
        raise VerificationFailed(
            height, "validator_set", f"validator set of epoch {epoch} is invalid: {exc}"
        ) from exc


def receipt_encoding(
    tx_type: int, status: int, cumulative: int, bloom: bytes, logs: list[Any]
) -> bytes:
    """Ethereum's consensus receipt encoding (the receipts-trie value)."""
    body = rlp_encode([b"\x01" if status == 1 else b"", cumulative, bloom, logs])
    return body if tx_type == 0 else bytes([tx_type]) + body


def rlp_encode(item: bytes | int | list[Any]) -> bytes:
    """Canonical RLP of bytes, non-negative ints and (nested) lists of them — the same
    bytes as ``rlp.encode`` for these types, without its sedes inference."""
    if isinstance(item, bytes):
        if len(item) == 1 and item[0] < 0x80:
            return item
        return _length_prefix(len(item), 0x80) + item
    if isinstance(item, int):
        return rlp_encode(item.to_bytes((item.bit_length() + 7) // 8, "big"))
    payload = b"".join([rlp_encode(x) for x in item])
    return _length_prefix(len(payload), 0xC0) + payload


def _length_prefix(length: int, offset: int) -> bytes:
    if length < 56:
        return bytes([offset + length])
    size = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([offset + 55 + len(size)]) + size


def list_trie_root(items: Sequence[bytes]) -> bytes:
    """Root of the Merkle-Patricia trie ``{rlp(i): items[i]}`` (transactions, receipts):
    the same root as ``node.chain.trie.trie_root``, built with the C Keccak."""
    if not items:
        return EMPTY_ROOT
    keyed = {_nibbles(rlp_encode(i)): item for i, item in enumerate(items)}
    return _keccak(rlp_encode(_trie_node(keyed)))


def _nibbles(key: bytes) -> bytes:
    return bytes(n for byte in key for n in (byte >> 4, byte & 0x0F))


def _hex_prefix(path: bytes, leaf: bool) -> bytes:
    flag = 2 if leaf else 0
    if len(path) % 2:
        head = bytes([16 * (flag + 1) + path[0]])
        path = path[1:]
    else:
        head = bytes([16 * flag])
    return head + bytes(16 * path[i] + path[i + 1] for i in range(0, len(path), 2))


def _trie_node(kv: dict[bytes, bytes]) -> list[Any]:
    """The node (as an RLP structure) holding exactly ``kv`` (paths relative to it)."""
    first = next(iter(kv))
    if len(kv) == 1:
        return [_hex_prefix(first, True), kv[first]]
    prefix = len(first)
    for key in kv:
        limit = min(prefix, len(key))
        common = 0
        while common < limit and key[common] == first[common]:
            common += 1
        prefix = common
        if prefix == 0:
            break
    if prefix:
        child = _trie_node({key[prefix:]: value for key, value in kv.items()})
        return [_hex_prefix(first[:prefix], False), _trie_ref(child)]
    groups: list[dict[bytes, bytes]] = [{} for _ in range(16)]
    value = b""
    for key, item in kv.items():
        if key:
            groups[key[0]][key[1:]] = item
        else:
            value = item
    return [*(_trie_ref(_trie_node(g)) if g else b"" for g in groups), value]


def _trie_ref(node: list[Any]) -> bytes | list[Any]:
    """A child reference: embedded when its RLP is shorter than 32 bytes, else its hash."""
    encoded = rlp_encode(node)
    return node if len(encoded) < 32 else _keccak(encoded)


def raw_tx_type(raw: bytes) -> int:
    """EIP-2718 type of a raw transaction (0 for legacy RLP)."""
    return 0 if raw and raw[0] >= 0xC0 else (raw[0] if raw else -1)


# ---------------------------------------------------------------- the verifier


class _Verifier:
    def __init__(
        self,
        genesis: Genesis,
        source: BlockSource,
        report: VerifyReport,
        state_read: Callable[[bytes], bytes | None] | None,
        sets: dict[int, ValidatorSet] | None = None,
    ) -> None:
        self.genesis = genesis
        self.source = source
        self.report = report
        self.state_read = state_read
        self.epoch_length = genesis.consensus.epoch_length
        self.engine = engine_id(genesis)
        self.sets: dict[int, ValidatorSet] = dict(sets or {})
        self.sets.setdefault(0, genesis_set(genesis, 0))
        self.sets.setdefault(1, genesis_set(genesis, 1))
        self.genesis_header = genesis_header(genesis)
        self.reexec: _Reexecutor | None = None
        #: Epoch -> its set's hash, computed once per epoch (every header commits to it).
        self.set_hashes: dict[int, bytes] = {}

    def vset(self, epoch: int, height: int) -> ValidatorSet:
        found = self.sets.get(epoch)
        if found is None:
            raise VerificationFailed(
                height, "validator_set", f"validator set of epoch {epoch} is not known"
            )
        return found

    def derive_next(self, header: Header) -> None:
        """At boundary block ``(k-1)E``: derive epoch k's set from its state."""
        height = header.height
        epoch = height // self.epoch_length + 1
        if epoch in self.sets or self.state_read is None:
            return
        try:
            members, _ = record_members(
                self.state_read, header, self.genesis.consensus.engine, self.genesis.gas_limit
            )
        except WitnessError as exc:
            raise VerificationFailed(
                height,
                "validator_set",
                f"validator set of epoch {epoch} cannot be read from this block's state: {exc}",
            ) from exc
        self.sets[epoch] = next_set(epoch, members, self.vset(epoch - 1, height), height)

    def follow_sets_below(self, reader: ChainReader, below: int) -> None:
        """Derive the sets needed from genesis up to height ``below``: every boundary
        block under it (light-client checks), including the one just below a range that
        starts inside an epoch — it carries the next epoch's set (epoch k's set is read
        from the state of block ``(k-1)E``)."""
        if below <= 0:
            return
        last_epoch = (below - 1) // self.epoch_length + 1
        for epoch in range(2, last_epoch + 1):
            height = (epoch - 1) * self.epoch_length
            row = reader.block_row(height)
            if row is None:
                raise VerificationFailed(height, "header", "boundary block is missing")
            stored_hash, header_bytes, seal = row
            previous = self.vset(epoch - 1, height)
            header = check_boundary(height, header_bytes, seal, self.genesis, previous)
            if _keccak(header_bytes) != stored_hash:
                raise VerificationFailed(height, "hash", "stored hash is not keccak(header)")
            self.derive_next(header)

    def run(
        self,
        first: int,
        last: int,
        previous_hash: bytes | None,
        progress: Callable[[int], None] | None,
    ) -> None:
        report = self.report
        expected = first
        prev = previous_hash
        for block in self.source.blocks(first, last):
            if block.height != expected:
                raise VerificationFailed(expected, "missing", "block is missing from the store")
            header = self.check_block(block, prev)
            prev = block.hash
            report.checked += 1
            report.transactions += block.tx_count
            if block.height > 0 and block.height % self.epoch_length == 0:
                self.derive_next(header)
            expected += 1
            if progress is not None and (expected & 127) == 0:
                progress(expected - first)
        if expected != last + 1:
            raise VerificationFailed(expected, "missing", "block is missing from the store")
        if progress is not None:
            progress(expected - first)

    def check_block(self, block: StoredBlock, prev: bytes | None) -> Header:
        h = block.height
        header = decode_header(block.header, h)
        digest = _keccak(block.header)
        if digest != block.hash:
            raise VerificationFailed(
                h,
                "hash",
                f"stored hash 0x{block.hash.hex()} is not keccak(header) 0x{digest.hex()}",
            )
        if h == 0:
            if block.header != self.genesis_header.encode():
                raise VerificationFailed(0, "genesis", "block 0 differs from genesis.json's")
            if block.seal or block.tx_count or block.txs:
                raise VerificationFailed(0, "genesis", "block 0 carries a seal or transactions")
            return header
        epoch = h // self.epoch_length
        vset = self.vset(epoch, h)
        set_hash = self.set_hashes.get(epoch)
        if set_hash is None:
            set_hash = self.set_hashes[epoch] = vset.hash()
        check_header_fields(header, h, self.genesis, vset, set_hash)
        if prev is not None and header.parent_hash != prev:
            raise VerificationFailed(
                h,
                "parent_hash",
                f"parent_hash 0x{header.parent_hash.hex()} is not block {h - 1}'s hash "
                f"0x{prev.hex()}",
            )
        self.check_body(block, header)
        self.report.signatures += check_certificate(
            block.seal, block.hash, h, self.genesis.chain_id, self.engine, vset
        )
        if self.reexec is not None:
            self.reexec.execute(block, header)
        return header

    def check_body(self, block: StoredBlock, header: Header) -> None:
        h = block.height
        if block.tx_count != len(block.txs):
            raise VerificationFailed(
                h,
                "transactions",
                f"block stores tx_count {block.tx_count} but {len(block.txs)} transaction rows",
            )
        if not block.txs:
            if header.transactions_root != EMPTY_ROOT:
                raise _root_mismatch(h, "transactions_root", header.transactions_root, EMPTY_ROOT)
            if header.receipts_root != EMPTY_ROOT:
                raise _root_mismatch(h, "receipts_root", header.receipts_root, EMPTY_ROOT)
            if header.gas_used != 0 or header.logs_bloom != EMPTY_BLOOM:
                raise VerificationFailed(h, "gas_used", "empty block with gas used or a bloom")
            if block.logs:
                raise VerificationFailed(h, "logs", "log rows stored for an empty block")
            return
        raws: list[bytes] = []
        for i, row in enumerate(block.txs):
            tx_hash, idx, raw = bytes(row[0]), row[1], bytes(row[2])
            if idx != i:
                raise VerificationFailed(h, "transactions", f"transaction row {i} has index {idx}")
            if _keccak(raw) != tx_hash:
                raise VerificationFailed(
                    h,
                    "transactions",
                    f"transaction {i}: stored hash 0x{tx_hash.hex()} is not keccak(raw) "
                    f"0x{_keccak(raw).hex()}",
                )
            raws.append(raw)
        computed = list_trie_root(raws)
        if computed != header.transactions_root:
            raise _root_mismatch(h, "transactions_root", header.transactions_root, computed)
        encoded, bloom, cumulative = self.receipts(block, raws)
        computed = list_trie_root(encoded)
        if computed != header.receipts_root:
            raise _root_mismatch(h, "receipts_root", header.receipts_root, computed)
        if bloom != header.logs_bloom:
            raise VerificationFailed(h, "logs_bloom", "logs_bloom does not match the receipts")
        if cumulative != header.gas_used:
            raise VerificationFailed(
                h, "gas_used", f"gas_used {header.gas_used}, receipts add up to {cumulative}"
            )

    def receipts(self, block: StoredBlock, raws: list[bytes]) -> tuple[list[bytes], bytes, int]:
        return stored_receipts(block, raws)


def stored_receipts(block: StoredBlock, raws: list[bytes]) -> tuple[list[bytes], bytes, int]:
    """Receipts' consensus encodings rebuilt from the stored rows, the block bloom and
    gas; VerificationFailed when the rows are inconsistent."""
    h = block.height
    logs = block.logs
    for j, lg in enumerate(logs):
        if lg[0] != j:
            raise VerificationFailed(h, "logs", f"log row {j} has log_index {lg[0]}")
    encoded: list[bytes] = []
    bloom_bits = 0
    previous_cumulative = 0
    next_log = 0
    for i, row in enumerate(block.txs):
        (
            tx_hash,
            _idx,
            _raw,
            _s,
            _r,
            _c,
            tx_type,
            status,
            gas_used,
            cumulative,
            _p,
            start,
            count,
        ) = row
        if tx_type != raw_tx_type(raws[i]):
            raise VerificationFailed(
                h, "receipts", f"receipt {i}: tx_type {tx_type} is not the transaction's"
            )
        if status not in (0, 1):
            raise VerificationFailed(h, "receipts", f"receipt {i}: status {status}")
        if cumulative - previous_cumulative != gas_used:
            raise VerificationFailed(
                h,
                "receipts",
                f"receipt {i}: gas_used {gas_used} is not the cumulative difference "
                f"{cumulative - previous_cumulative}",
            )
        if start != next_log or count < 0 or start + count > len(logs):
            raise VerificationFailed(
                h, "logs", f"receipt {i}: log range {start}+{count} is not contiguous"
            )
        entries = []
        for lg in logs[start : start + count]:
            if lg[1] != i or bytes(lg[2]) != bytes(tx_hash):
                raise VerificationFailed(
                    h, "logs", f"log {lg[0]} is filed under another transaction"
                )
            topics = [bytes(t) for t in lg[4:8] if t is not None]
            entries.append([bytes(lg[3]), topics, bytes(lg[8])])
        bloom = _bloom(entries)
        bloom_bits |= int.from_bytes(bloom, "big")
        encoded.append(receipt_encoding(tx_type, status, cumulative, bloom, entries))
        previous_cumulative = cumulative
        next_log = start + count
    if next_log != len(logs):
        raise VerificationFailed(h, "logs", f"{len(logs) - next_log} log rows belong to no receipt")
    return encoded, bloom_bits.to_bytes(BLOOM_BYTES, "big"), previous_cumulative


def _bloom(entries: list[list[Any]]) -> bytes:
    if not entries:
        return EMPTY_BLOOM
    bits = 0
    for address, topics, _data in entries:
        bits |= _bloom_bits(address)
        for topic in topics:
            bits |= _bloom_bits(topic)
    return bits.to_bytes(BLOOM_BYTES, "big")


#: Bloom bits of recently seen addresses and topics (they repeat across receipts).
_BLOOM_CACHE: dict[bytes, int] = {}


def _bloom_bits(item: bytes) -> int:
    """The three bits Ethereum's bloom (Yellow Paper M3:2048) sets for ``item``: the low
    11 bits of each of the first three 16-bit words of ``keccak(item)``."""
    bits = _BLOOM_CACHE.get(item)
    if bits is None:
        h = _keccak(item)
        bits = (
            (1 << (((h[0] << 8) | h[1]) & 2047))
            | (1 << (((h[2] << 8) | h[3]) & 2047))
            | (1 << (((h[4] << 8) | h[5]) & 2047))
        )
        if len(_BLOOM_CACHE) >= 65536:
            _BLOOM_CACHE.clear()
        _BLOOM_CACHE[item] = bits
    return bits


def _root_mismatch(height: int, name: str, claimed: bytes, computed: bytes) -> VerificationFailed:
    return VerificationFailed(
        height,
        name,
        f"{name} mismatch (header 0x{bytes(claimed).hex()} computed 0x{bytes(computed).hex()})",
    )


class _Reexecutor:
    """Re-executes blocks from genesis into a fresh in-memory store."""

    def __init__(self, genesis: Genesis) -> None:
        from node.chain.executor import Executor

        self.store = ChainStore.open(":memory:", build_genesis(genesis))
        self.executor = Executor(self.store)
        self.chain_id = genesis.chain_id

    def execute(self, block: StoredBlock, header: Header) -> None:
        h = block.height
        if self.store.head().height != h - 1:
            raise VerificationFailed(h, "reexecution", "re-execution is not at the parent")
        full = Block(header, tuple(bytes(r[2]) for r in block.txs), b"")
        try:
            result = self.executor.validate_block(full)
        except InvalidBlock as exc:
            text = str(exc)
            prefix = f"block {h}: "
            text = text[len(prefix) :] if text.startswith(prefix) else text
            name = text.split(" ", 1)[0] if "mismatch" in text else "reexecution"
            raise VerificationFailed(h, name, f"re-execution: {text}") from exc
        except TwinChainError as exc:
            raise VerificationFailed(h, "reexecution", f"re-execution failed: {exc}") from exc
        for i, (receipt, row) in enumerate(zip(result.receipts, block.txs, strict=True)):
            stored = (
                bytes(row[3]),
                None if row[4] is None else bytes(row[4]),
                None if row[5] is None else bytes(row[5]),
                row[8],
                int.from_bytes(bytes(row[10]), "big"),
            )
            executed = (
                bytes(receipt.sender),
                None if receipt.to is None else bytes(receipt.to),
                None if receipt.contract_address is None else bytes(receipt.contract_address),
                receipt.gas_used,
                receipt.effective_gas_price,
            )
            names = ("sender", "recipient", "contract_address", "gas_used", "effective_gas_price")
            for name, a, b in zip(names, stored, executed, strict=True):
                if a != b:
                    raise VerificationFailed(
                        h,
                        "receipts",
                        f"receipt {i}: stored {name} {_show(a)}, re-execution gives {_show(b)}",
                    )
        self.executor.commit(result, block.seal)

    def catch_up(self, source: BlockSource, below: int) -> None:
        """Execute blocks 1..below-1 (under the verified range) to reach its parent."""
        if below <= 1:
            return
        for block in source.blocks(1, below - 1):
            header = decode_header(block.header, block.height)
            self.execute(block, header)


def _show(value: object) -> str:
    return "0x" + value.hex() if isinstance(value, bytes) else str(value)


# ---------------------------------------------------------------- entry point


def verify_chain(
    data: MinerData,
    from_height: int = 0,
    to_height: int | None = None,
    reexecute: bool = False,
    *,
    progress: Callable[[int], None] | None = None,
    jobs: int = 1,
) -> VerifyReport:
    """Verify heights ``from_height..to_height`` (default: the head) of a miner's store.

    Never raises for a verification failure: the report carries the first one. Raises
    :class:`~node.errors.InvalidInput` for a bad range and :class:`TwinChainError` when
    the store cannot be opened. ``progress`` is called with the number of heights done.
    ``jobs > 1`` checks long ranges in that many processes (validator sets are derived
    first, in order; the blocks are then checked in chunks; the lowest failing height
    wins, so the report is the same as with one process).
    """
    from node.errors import InvalidInput

    genesis = data.genesis
    with ChainReader(data.chain_db) as reader:
        head = reader.head_height()
        last = head if to_height is None else to_height
        if from_height < 0 or last < from_height:
            raise InvalidInput(f"bad range {from_height}..{last}")
        if last > head:
            raise InvalidInput(f"--to {last} is above the stored head {head}")
        built = genesis_header(genesis)
        report = VerifyReport(genesis.chain_id, built.hash(), from_height, last, reexecute)
        meta = reader.meta()
        start = time.perf_counter()
        if jobs > 1 and not reexecute and last - from_height + 1 >= 2 * PARALLEL_CHUNK:
            if meta.get("genesis_hash") != built.hash():
                report.failure = Failure(
                    0, "genesis", "the store's genesis hash is not genesis.json's"
                )
            else:
                _verify_parallel(data, reader, report, jobs, progress)
            report.seconds = time.perf_counter() - start
            return report
        verifier = _Verifier(genesis, reader, report, reader.state_node)
        try:
            if meta.get("genesis_hash") != built.hash():
                raise VerificationFailed(
                    0, "genesis", "the store's genesis hash is not genesis.json's"
                )
            verifier.follow_sets_below(reader, from_height)
            previous: bytes | None = None
            if from_height > 0:
                row = reader.block_row(from_height - 1)
                if row is None:
                    raise VerificationFailed(from_height - 1, "missing", "block is missing")
                previous = _keccak(row[1])
            if reexecute:
                verifier.reexec = _Reexecutor(genesis)
                verifier.reexec.catch_up(reader, from_height)
            verifier.run(from_height, last, previous, progress)
        except VerificationFailed as exc:
            report.failure = Failure(exc.height, exc.field, exc.message)
        report.seconds = time.perf_counter() - start
        report.epochs = {e: s.members for e, s in sorted(verifier.sets.items())}
        return report


#: Heights per work unit when verifying in several processes.
PARALLEL_CHUNK: Final = 2000


def _verify_parallel(
    data: MinerData,
    reader: ChainReader,
    report: VerifyReport,
    jobs: int,
    progress: Callable[[int], None] | None,
) -> None:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    first, last = report.from_height, report.to_height
    sets_verifier = _Verifier(data.genesis, reader, report, reader.state_node)
    sets_failure: VerificationFailed | None = None
    try:
        sets_verifier.follow_sets_below(reader, last + 1)
    except VerificationFailed as exc:
        sets_failure = exc
    sets = {e: s.members for e, s in sets_verifier.sets.items()}
    report.epochs = dict(sorted(sets.items()))
    stop = last if sets_failure is None else min(last, sets_failure.height - 1)
    chunks = [
        (a, min(stop, a + PARALLEL_CHUNK - 1)) for a in range(first, stop + 1, PARALLEL_CHUNK)
    ]
    failures: list[Failure] = []
    if sets_failure is not None:
        failures.append(Failure(sets_failure.height, sets_failure.field, sets_failure.message))
    done = 0
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
        args = [(str(data.data_dir), str(data.genesis_path), a, b, sets) for a, b in chunks]
        for checked, txs, sigs, failure in pool.map(_verify_chunk, args):
            report.checked += checked
            report.transactions += txs
            report.signatures += sigs
            done += checked
            if failure is not None:
                failures.append(failure)
            if progress is not None:
                progress(done)
    if failures:
        report.failure = min(failures, key=lambda f: f.height)


def _verify_chunk(
    args: tuple[str, str, int, int, dict[int, tuple[Address, ...]]],
) -> tuple[int, int, int, Failure | None]:
    """Worker: verify ``first..last`` with the validator sets already derived."""
    data_dir, genesis_path, first, last, members = args
    data = MinerData.open(data_dir, genesis_path)
    with ChainReader(data.chain_db) as reader:
        report = VerifyReport(data.genesis.chain_id, Hash32(b"\0" * 32), first, last, False)
        sets = {e: ValidatorSet(e, m) for e, m in members.items()}
        verifier = _Verifier(data.genesis, reader, report, reader.state_node, sets)
        try:
            previous: bytes | None = None
            if first > 0:
                row = reader.block_row(first - 1)
                if row is None:
                    raise VerificationFailed(first - 1, "missing", "block is missing")
                previous = _keccak(row[1])
            verifier.run(first, last, previous, None)
        except VerificationFailed as exc:
            return (
                report.checked,
                report.transactions,
                report.signatures,
                Failure(exc.height, exc.field, exc.message),
            )
        return report.checked, report.transactions, report.signatures, None
