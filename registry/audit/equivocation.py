"""Equivocation evidence gathered by miners: list it, check it, submit it to Election.

Theory of operation
-------------------
Every miner keeps the equivocations it saw in its own ``consensus.db`` (table
``evidence``, one row per offence: validator, engine, kind, height, round) and serves them
over JSON-RPC (``twin_getEvidence``). An analyst gathers them from any number of miners —
data directories opened read-only, or running miners over RPC — and this module:

1. decodes each record into its two signed messages (a record that does not decode is
   kept, marked invalid, with the decoder's reason — never silently dropped);
2. dedupes by *offence* ``(validator, engine, kind, height, round)``: two miners usually
   saw the same pair of messages, but may have seen different pairs for one offence; the
   first pair that verifies is kept, and every source that reported it is listed;
3. verifies each against **the validator set of its epoch alone**
   (:meth:`EquivocationEvidence.verify`: one signer, one slot, an evidence kind, two
   different digests, both signatures valid in this chain's domain, signer a member). The
   set is derived the same way the replica derives it: genesis validators for epochs 0
   and 1, then the Membership MINER list (PBFT) or ``Election.committee()`` (DPoS) read
   from the state of the final boundary block ``(k-1)*E`` of a data directory (an empty
   answer keeps the previous set). With only a URL, the miner's ``twin_getValidatorSet``
   is used, and the record says so (``validator_set_source: rpc``): that is trusting the
   miner for the set, not for the signatures.

Each offence gets a short, stable id (``keccak(validator || u64 engine, kind, height,
round)``, first 6 bytes as hex) that ``twinchain audit jail`` takes.

For DPoS networks :func:`submit_jail` turns a record into an ``Election.jail(...)``
transaction signed locally with a member key (the node never sees the key), submits it
through ``POST /v1/transactions?wait=true`` (whose preflight answers a refused call with
the contract's reason), and reads ``Election.isJailed(validator)`` afterwards. The
contract re-checks both signatures with ``ecrecover``, so it trusts no submitter.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from eth_abi.abi import decode as abi_decode
from eth_abi.abi import encode as abi_encode
from eth_hash.auto import keccak

from contracts import ELECTION_ADDRESS
from node.chain.block import Header
from node.chain.executor import Executor
from node.chain.genesis import Genesis, build_genesis
from node.chain.store import ChainStore
from node.chain.types import ELECTION_ADDRESS as CHAIN_ELECTION_ADDRESS
from node.chain.types import MEMBERSHIP_ADDRESS
from node.consensus.evidence import EquivocationEvidence, EvidenceError
from node.consensus.messages import EngineId, Kind, SignedMessage
from node.consensus.types import Address, ValidatorSet
from node.errors import InvalidInput, NotFound, StorageError, TwinChainError
from registry.audit.source import MinerData

__all__ = [
    "EvidenceRecord",
    "JailResult",
    "MessageView",
    "RawRecord",
    "ValidatorSets",
    "chain_validator_sets",
    "evidence_id",
    "find_record",
    "gather",
    "genesis_validator_sets",
    "is_jailed",
    "jail_calldata",
    "open_chain_readonly",
    "read_data_dir",
    "read_rpc",
    "rpc_caller",
    "rpc_validator_sets",
    "submit_jail",
]

_MINERS_LIST: Final = keccak(b"minersList()")[:4]
_COMMITTEE: Final = keccak(b"committee()")[:4]
_IS_JAILED: Final = keccak(b"isJailed(address)")[:4]
_IS_CANDIDATE: Final = keccak(b"isCandidate(address)")[:4]
JAIL_SIGNATURE: Final = (
    "jail(address,uint256,uint256,uint256,uint256,bytes32,bytes32,bytes,bytes32,bytes32,bytes)"
)
_JAIL: Final = keccak(JAIL_SIGNATURE.encode())[:4]
#: Gas for a jail transaction (two ecrecovers and a log: well under this).
JAIL_GAS: Final = 500_000

ValidatorSets = Callable[[int], ValidatorSet | None]
"""``sets(epoch)``: the validator set of an epoch, or None when it cannot be known."""

RpcCall = Callable[[str, list[Any]], Any]
"""``call(method, params)``: one authenticated JSON-RPC call, returning ``result``."""


# ---------------------------------------------------------------- records


def evidence_id(validator: bytes, engine: int, kind: int, height: int, round_: int) -> str:
    """Short stable id of one offence (12 hex digits)."""
    body = bytes(validator) + b"".join(x.to_bytes(8, "big") for x in (engine, kind, height, round_))
    return keccak(body)[:6].hex()


def _name(enum: type[EngineId] | type[Kind], value: int) -> str:
    try:
        return enum(value).name.lower().replace("_", "-")
    except ValueError:
        return f"unknown-{value}"


@dataclass(frozen=True)
class MessageView:
    """One of the two signed messages, decoded, with its digests."""

    engine: str
    kind: str
    height: int
    round: int
    digest: str
    payload_hash: str
    signer: str
    signature: str
    sighash: str
    encoded: str

    @classmethod
    def of(cls, msg: SignedMessage, chain_id: int) -> MessageView:
        """Decoded fields of ``msg``; the sighash is in ``chain_id``'s domain."""
        try:
            sighash = "0x" + msg.sighash(chain_id).hex()
        except ValueError:
            sighash = ""
        return cls(
            engine=_name(EngineId, msg.engine),
            kind=_name(Kind, msg.kind),
            height=msg.height,
            round=msg.round,
            digest="0x" + bytes(msg.digest).hex(),
            payload_hash="0x" + bytes(msg.payload_hash).hex(),
            signer="0x" + bytes(msg.signer).hex(),
            signature="0x" + msg.signature.hex(),
            sighash=sighash,
            encoded="0x" + msg.encode().hex(),
        )


@dataclass
class EvidenceRecord:
    """One offence as gathered, and whether it verifies with its epoch's validator set."""

    id: str
    validator: str
    engine: str
    kind: str
    height: int
    round: int
    epoch: int
    evidence: EquivocationEvidence | None
    encoded: str
    sources: list[str] = field(default_factory=list)
    seen_at_height: int | None = None
    verified: bool = False
    reason: str | None = None
    validator_set_hash: str | None = None
    validator_set_source: str | None = None

    @property
    def position(self) -> str:
        """Where in the protocol: the PBFT view, the DPoS slot, or the DPoS vote round
        and phase (a CONFIRM's wire round is ``2r`` pre-confirm / ``2r+1`` confirm)."""
        if self.engine == "pbft":
            return f"view {self.round}"
        if self.kind == "confirm":
            r, phase = divmod(self.round, 2)
            return f"round {r} {'confirm' if phase else 'pre-confirm'}"
        return f"slot {self.round}"

    def messages(self, chain_id: int) -> list[MessageView]:
        """The two signed messages, decoded (empty for a record that does not decode)."""
        if self.evidence is None:
            return []
        return [MessageView.of(m, chain_id) for m in (self.evidence.first, self.evidence.second)]

    def to_json(self, chain_id: int) -> dict[str, Any]:
        """Plain JSON form (what ``--json`` prints)."""
        return {
            "id": self.id,
            "validator": self.validator,
            "engine": self.engine,
            "kind": self.kind,
            "height": self.height,
            "round": self.round,
            "position": self.position,
            "epoch": self.epoch,
            "verified": self.verified,
            "reason": self.reason,
            "validator_set_hash": self.validator_set_hash,
            "validator_set_source": self.validator_set_source,
            "sources": list(self.sources),
            "seen_at_height": self.seen_at_height,
            "messages": [vars(m) for m in self.messages(chain_id)],
            "encoded": self.encoded,
        }


@dataclass(frozen=True)
class RawRecord:
    """A record as read from one source, before dedupe and verification."""

    source: str
    encoded: bytes
    key: tuple[bytes, int, int, int, int] | None  # from the store's columns, if any
    seen_at_height: int | None


def _decode(raw: RawRecord) -> tuple[EquivocationEvidence | None, str | None]:
    try:
        return EquivocationEvidence.decode(raw.encoded), None
    except EvidenceError as exc:
        return None, str(exc)


# ---------------------------------------------------------------- sources


def _connect_ro(path: Path) -> sqlite3.Connection:
    if not path.is_file():
        raise NotFound(f"{path}: no such database")
    try:
        return sqlite3.connect(
            f"file:{path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False
        )
    except sqlite3.Error as exc:
        raise StorageError(f"cannot open {path} read-only: {exc}") from exc


def read_data_dir(data: MinerData) -> list[RawRecord]:
    """Every evidence row of one miner's ``consensus.db`` (opened read-only).

    A data directory without ``consensus.db`` (a miner that never ran) has no evidence.
    """
    path = data.consensus_db
    if not path.is_file():
        return []
    conn = _connect_ro(path)
    try:
        rows = conn.execute(
            "SELECT validator, kind, height, round, encoded, seen_at_height, key "
            "FROM evidence ORDER BY height, validator, kind, round"
        ).fetchall()
    except sqlite3.Error as exc:
        raise StorageError(f"cannot read evidence from {path}: {exc}") from exc
    finally:
        conn.close()
    out = []
    for validator, kind, height, round_, encoded, seen, key in rows:
        engine = int.from_bytes(bytes(key)[20:28], "big") if len(bytes(key)) >= 28 else 0
        out.append(
            RawRecord(
                str(data.data_dir),
                bytes(encoded),
                (bytes(validator), engine, int(kind), int(height), int(round_)),
                int(seen),
            )
        )
    return out


def read_rpc(call: RpcCall, source: str) -> list[RawRecord]:
    """Every record a running miner serves through ``twin_getEvidence``."""
    result = call("twin_getEvidence", [])
    if not isinstance(result, list):
        raise InvalidInput(f"{source}: twin_getEvidence did not return a list")
    out = []
    for item in result:
        encoded = str(item.get("encoded", "")) if isinstance(item, dict) else ""
        try:
            data = bytes.fromhex(encoded.removeprefix("0x"))
        except ValueError:
            data = b""
        out.append(RawRecord(source, data, None, None))
    return out


# ---------------------------------------------------------------- validator sets


def open_chain_readonly(data: MinerData) -> ChainStore:
    """The miner's chain store on a read-only SQLite connection (the miner may run)."""
    conn = _connect_ro(data.chain_db)
    try:
        store = ChainStore(conn, data.chain_db, build_genesis(data.genesis).header)
        genesis = store.header_by_height(0)
    except (sqlite3.Error, TwinChainError) as exc:
        conn.close()
        raise StorageError(f"cannot read {data.chain_db}: {exc}") from exc
    if genesis is None or genesis.hash() != store.genesis_hash:
        conn.close()
        raise InvalidInput(f"{data.chain_db} does not belong to the genesis {data.genesis_path}")
    return store


def chain_validator_sets(genesis: Genesis, store: ChainStore) -> ValidatorSets:
    """The replica's rule over a stored chain (see the module docstring)."""
    executor = Executor(store)
    length = genesis.consensus.epoch_length
    pbft = genesis.consensus.engine == "pbft"
    selector = _MINERS_LIST if pbft else _COMMITTEE
    target = MEMBERSHIP_ADDRESS if pbft else CHAIN_ELECTION_ADDRESS
    cache: dict[int, ValidatorSet] = {}

    def sets(epoch: int) -> ValidatorSet | None:
        if epoch in cache:
            return cache[epoch]
        if epoch <= 1:
            vset = ValidatorSet(epoch, tuple(Address(a) for a in genesis.validators))
        else:
            boundary: Header | None = store.header_by_height((epoch - 1) * length)
            if boundary is None:
                return None
            previous = sets(epoch - 1)
            if previous is None:
                return None
            (members,) = abi_decode(["address[]"], executor.call(target, selector, at=boundary))
            chosen = tuple(Address(bytes.fromhex(m[2:])) for m in members)
            vset = ValidatorSet(epoch, chosen or previous.members)
        cache[epoch] = vset
        return vset

    return sets


def rpc_validator_sets(call: RpcCall) -> ValidatorSets:
    """Sets as a running miner reports them (``twin_getValidatorSet``)."""
    cache: dict[int, ValidatorSet | None] = {}

    def sets(epoch: int) -> ValidatorSet | None:
        if epoch not in cache:
            result = call("twin_getValidatorSet", [hex(epoch)])
            if not isinstance(result, dict):
                cache[epoch] = None
            else:
                members = tuple(
                    Address(bytes.fromhex(str(m)[2:])) for m in result.get("members", [])
                )
                cache[epoch] = ValidatorSet(epoch, members) if members else None
        return cache[epoch]

    return sets


def genesis_validator_sets(genesis: Genesis) -> ValidatorSets:
    """Only what genesis alone fixes: the sets of epochs 0 and 1."""
    members = tuple(Address(a) for a in genesis.validators)
    return lambda epoch: ValidatorSet(epoch, members) if epoch <= 1 else None


# ---------------------------------------------------------------- gather


def gather(
    raws: Iterable[RawRecord],
    chain_id: int,
    epoch_length: int,
    sets: Sequence[tuple[str, ValidatorSets]],
) -> list[EvidenceRecord]:
    """Dedupe by offence, verify each, order by height.

    ``sets`` are tried in order (e.g. a data dir's chain, then a miner's RPC); the first
    that knows the epoch's set is used and named in ``validator_set_source``.
    """
    records: dict[str, EvidenceRecord] = {}
    order: list[str] = []
    for raw in raws:
        evidence, problem = _decode(raw)
        if evidence is not None:
            key: tuple[bytes, int, int, int, int] = evidence.key()
        elif raw.key is not None:
            key = raw.key
        else:
            key = (keccak(raw.encoded)[:20], 0, 0, 0, 0)
        rid = evidence_id(*key)
        candidate = EvidenceRecord(
            id=rid,
            validator="0x" + bytes(key[0]).hex(),
            engine=_name(EngineId, key[1]),
            kind=_name(Kind, key[2]),
            height=key[3],
            round=key[4],
            epoch=key[3] // epoch_length,
            evidence=evidence,
            encoded="0x" + raw.encoded.hex(),
            sources=[raw.source],
            seen_at_height=raw.seen_at_height,
            reason=None if problem is None else f"does not decode: {problem}",
        )
        if evidence is not None:
            _verify(candidate, chain_id, sets)
            if candidate.verified and raw.key is not None and raw.key != key:
                candidate.verified = False
                candidate.reason = (
                    "the stored columns (validator, engine, kind, height, round) disagree "
                    "with the signed messages"
                )
        existing = records.get(rid)
        if existing is None:
            records[rid] = candidate
            order.append(rid)
            continue
        if raw.source not in existing.sources:
            existing.sources.append(raw.source)
        if not existing.verified and candidate.verified:
            candidate.sources = existing.sources
            records[rid] = candidate
    return sorted((records[r] for r in order), key=lambda r: (r.height, r.validator, r.kind))


def _verify(
    record: EvidenceRecord, chain_id: int, sets: Sequence[tuple[str, ValidatorSets]]
) -> None:
    assert record.evidence is not None
    for source, lookup in sets:
        try:
            vset = lookup(record.epoch)
        except TwinChainError as exc:
            record.reason = f"validator set of epoch {record.epoch}: {exc}"
            continue
        if vset is None:
            continue
        record.validator_set_hash = "0x" + vset.hash().hex()
        record.validator_set_source = source
        try:
            record.evidence.verify(chain_id, vset)
        except EvidenceError as exc:
            record.verified, record.reason = False, str(exc)
        else:
            record.verified, record.reason = True, None
        return
    record.verified = False
    record.reason = record.reason or f"validator set of epoch {record.epoch} is not known"


def find_record(records: Sequence[EvidenceRecord], wanted: str) -> EvidenceRecord:
    """The record whose id starts with ``wanted`` (NotFound / InvalidInput if ambiguous)."""
    text = wanted.lower().removeprefix("0x")
    if not text or any(c not in "0123456789abcdef" for c in text):
        raise InvalidInput(f"evidence id must be hex digits, got {wanted!r}")
    matches = [r for r in records if r.id.startswith(text)]
    if not matches:
        known = ", ".join(r.id for r in records) or "none"
        raise NotFound(f"no evidence record {wanted!r} (known: {known})")
    if len(matches) > 1:
        raise InvalidInput(f"evidence id {wanted!r} is ambiguous: {[r.id for r in matches]}")
    return matches[0]


# ---------------------------------------------------------------- jail


def jail_calldata(evidence: EquivocationEvidence) -> bytes:
    """Calldata of ``Election.jail(...)`` for this evidence."""
    a, b = evidence.first, evidence.second
    args = [
        "0x" + bytes(a.signer).hex(),
        a.engine,
        a.kind,
        a.height,
        a.round,
        bytes(a.digest).rjust(32, b"\x00"),
        bytes(a.payload_hash),
        a.signature,
        bytes(b.digest).rjust(32, b"\x00"),
        bytes(b.payload_hash),
        b.signature,
    ]
    types = [
        "address",
        "uint256",
        "uint256",
        "uint256",
        "uint256",
        "bytes32",
        "bytes32",
        "bytes",
        "bytes32",
        "bytes32",
        "bytes",
    ]
    return _JAIL + abi_encode(types, args)


@dataclass(frozen=True)
class JailResult:
    """What happened to a jail transaction."""

    evidence_id: str
    validator: str
    tx_hash: str
    status: str  # committed | reverted | pending
    block_height: int | None
    jailed: bool

    def to_json(self) -> dict[str, Any]:
        """Plain JSON form."""
        return dict(vars(self))


def election_flag(call: RpcCall, selector: bytes, validator: bytes) -> bool:
    """``Election.isJailed`` / ``isCandidate`` of ``validator`` at the head."""
    data = selector + abi_encode(["address"], ["0x" + bytes(validator).hex()])
    result = call("eth_call", [{"to": ELECTION_ADDRESS, "data": "0x" + data.hex()}, "latest"])
    return bool(int(str(result), 16))


def is_jailed(call: RpcCall, validator: bytes) -> bool:
    """``Election.isJailed(validator)`` at the head."""
    return election_flag(call, _IS_JAILED, validator)


def submit_jail(url: str, private_key: bytes, record: EvidenceRecord) -> JailResult:
    """Sign ``Election.jail`` for ``record`` with ``private_key``, submit it, wait, report.

    Refuses (InvalidInput) a record that did not verify: nothing is sent. A call the
    contract would refuse (not a member, not a candidate, already jailed) comes back from
    the server's preflight as an error with the contract's reason.
    """
    from eth_account import Account

    from registry.client import TwinClient

    if record.evidence is None or not record.verified:
        raise InvalidInput(
            f"evidence {record.id} does not verify ({record.reason}); refusing to submit it"
        )
    account = Account.from_key(private_key)
    with TwinClient(url, private_key=private_key) as client:
        nonce = int(client.get_json(f"/v1/accounts/{account.address}")["nonce"])
        tx = {
            "to": ELECTION_ADDRESS,
            "data": "0x" + jail_calldata(record.evidence).hex(),
            "gas": JAIL_GAS,
            "maxFeePerGas": 0,
            "maxPriorityFeePerGas": 0,
            "nonce": nonce,
            "chainId": client.chain_id,
            "type": 2,
        }
        signed = account.sign_transaction(tx)
        reply = client.request(
            "POST",
            "/v1/transactions",
            params={"wait": "true"},
            json={"raw": "0x" + bytes(signed.raw_transaction).hex()},
        ).json()
        jailed = is_jailed(_client_rpc(client), record.evidence.validator)
    return JailResult(
        evidence_id=record.id,
        validator=record.validator,
        tx_hash=str(reply["tx_hash"]),
        status=str(reply["status"]),
        block_height=reply.get("block_height"),
        jailed=jailed,
    )


def _client_rpc(client: Any) -> RpcCall:
    """A JSON-RPC caller over a signed-in :class:`registry.client.TwinClient`."""

    def call(method: str, params: list[Any]) -> Any:
        body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
        reply = client.request("POST", "/", json=body).json()
        if "error" in reply:
            raise InvalidInput(f"{method}: {reply['error'].get('message', reply['error'])}")
        return reply["result"]

    return call


def rpc_caller(url: str, *, token: str | None = None, private_key: bytes | None = None) -> RpcCall:
    """An authenticated JSON-RPC caller: a bearer ``token``, or sign in with a key."""
    import httpx

    from registry.client import TwinClient

    if private_key is not None:
        return _client_rpc(TwinClient(url, private_key=private_key, timeout=30))
    if token is None:
        raise InvalidInput("reading a miner's evidence needs a token or a member key")
    http = httpx.Client(timeout=30, headers={"Authorization": f"Bearer {token}"})

    def call(method: str, params: list[Any]) -> Any:
        body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
        try:
            reply = http.post(url, json=body).json()
        except (httpx.HTTPError, ValueError) as exc:
            raise InvalidInput(f"cannot reach {url}: {exc}") from exc
        if "error" in reply:
            raise InvalidInput(f"{method}: {reply['error'].get('message', reply['error'])}")
        return reply["result"]

    return call
