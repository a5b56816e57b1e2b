"""Evidence bundles: self-contained JSON proofs of transactions, checked offline.

A bundle proves that transactions were committed by the network described by a
``genesis.json``, with nothing else: no node, no network. It carries, for each
transaction, the raw bytes, the receipt's consensus encoding, the block header and its
commit certificate, and Merkle-Patricia proofs of the transaction in
``transactions_root`` and of the receipt in ``receipts_root``; and, once per bundle, the
*validator-set chain* from genesis to the latest epoch involved: for each epoch ``k >= 2``
the boundary block ``(k-1)E`` (header and certificate, checked under epoch ``k-1``'s set)
and the state witness from which ``minersList()`` / ``committee()`` is re-executed to
give epoch ``k``'s set (:mod:`registry.audit.witness`).

:func:`check_bundle` verifies every field: any alteration makes it fail with the reason.
The format is specified in ``docs/evidence.md``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import rlp
from eth_abi.abi import decode as abi_decode
from eth_hash.auto import keccak
from trie.hexary import HexaryTrie

from node.chain.block import Header
from node.chain.genesis import Genesis
from node.chain.tx import decode_transaction
from node.chain.types import REGISTRY_ADDRESS
from node.consensus.certificate import CertificateError, CommitCertificate
from node.consensus.types import ValidatorSet
from node.errors import InvalidInput, TwinChainError
from registry.audit.verify import (
    ChainReader,
    VerificationFailed,
    check_boundary,
    check_certificate,
    check_header_fields,
    decode_header,
    engine_id,
    genesis_header,
    genesis_set,
    next_set,
    raw_tx_type,
    receipt_encoding,
    stored_receipts,
)
from registry.audit.witness import WitnessError, record_members, replay_members

__all__ = [
    "BUNDLE_FORMAT",
    "BUNDLE_VERSION",
    "BundleError",
    "BundleSummary",
    "build_bundle",
    "check_bundle",
    "check_validator_set_chain",
    "hx",
    "load_json",
    "prove_list_item",
    "resolve_model",
    "resolve_round",
    "validator_set_chain",
    "verify_list_proof",
]

BUNDLE_FORMAT: Final = "twinchain-evidence-bundle"
BUNDLE_VERSION: Final = 1

_HEADER_INTS: Final = ("chain_id", "height", "timestamp", "epoch", "gas_used", "gas_limit")
_HEADER_FIELDS: Final = (
    "chain_id",
    "parent_hash",
    "height",
    "timestamp",
    "proposer",
    "epoch",
    "validator_set_hash",
    "state_root",
    "transactions_root",
    "receipts_root",
    "logs_bloom",
    "gas_used",
    "gas_limit",
)


class BundleError(TwinChainError):
    """A bundle or export does not prove what it claims (the message says why)."""


# ---------------------------------------------------------------- hex and JSON helpers


def hx(data: bytes) -> str:
    """Lowercase ``0x`` hex."""
    return "0x" + bytes(data).hex()


def unhex(value: object, where: str, size: int | None = None) -> bytes:
    """Parse canonical lowercase ``0x`` hex (optionally of a fixed size)."""
    if not isinstance(value, str) or not value.startswith("0x") or value != value.lower():
        raise BundleError(f"{where}: expected lowercase 0x-hex, got {value!r}")
    try:
        data = bytes.fromhex(value[2:])
    except ValueError:
        raise BundleError(f"{where}: not hexadecimal") from None
    if size is not None and len(data) != size:
        raise BundleError(f"{where}: expected {size} bytes, got {len(data)}")
    return data


def _int(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise BundleError(f"{where}: expected a non-negative integer, got {value!r}")
    return value


def _obj(value: object, where: str, keys: Sequence[str]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BundleError(f"{where}: expected an object")
    if set(value) != set(keys):
        extra = sorted(set(value) - set(keys))
        missing = sorted(set(keys) - set(value))
        raise BundleError(f"{where}: unexpected keys {extra} / missing keys {missing}")
    return value


def _list(value: object, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise BundleError(f"{where}: expected a list")
    return value


def _same(claimed: object, actual: object, where: str) -> None:
    if claimed != actual:
        raise BundleError(f"{where}: says {claimed!r}, the proven value is {actual!r}")


def header_json(header: Header) -> dict[str, Any]:
    """The decoded header fields (ints as JSON numbers, bytes as 0x-hex)."""
    out: dict[str, Any] = {}
    for name in _HEADER_FIELDS:
        value = getattr(header, name)
        out[name] = value if name in _HEADER_INTS else hx(value)
    return out


def certificate_json(cert: CommitCertificate) -> dict[str, Any]:
    """The decoded certificate fields."""
    return {
        "engine": cert.engine,
        "kind": cert.kind,
        "height": cert.height,
        "round": cert.round,
        "block_hash": hx(cert.block_hash),
        "signatures": [{"signer": hx(s), "signature": hx(g)} for s, g in cert.signatures],
    }


# ---------------------------------------------------------------- Merkle-Patricia proofs


def _nibbles(key: bytes) -> list[int]:
    return [n for b in key for n in (b >> 4, b & 0x0F)]


def _hp_decode(encoded: bytes) -> tuple[list[int], bool]:
    if not encoded:
        raise BundleError("trie proof: empty path in a node")
    flag = encoded[0] >> 4
    nibs = _nibbles(encoded)
    return nibs[2 - (flag & 1) :], bool(flag & 2)


def _walk(root: bytes, key: bytes, fetch: Any) -> tuple[bytes | None, int]:
    """Follow ``key`` from ``root``; ``fetch(hash)`` returns a node's RLP (counted)."""
    path = _nibbles(key)
    used = 0
    node: Any = rlp.decode(fetch(root, used))
    used += 1
    while True:
        if not isinstance(node, list):
            raise BundleError("trie proof: a node is not an RLP list")
        if len(node) == 17:
            if not path:
                return (node[16] or None), used
            ref = node[path[0]]
            path = path[1:]
        elif len(node) == 2:
            segment, leaf = _hp_decode(node[0])
            if leaf:
                return (node[1] if segment == path else None), used
            if path[: len(segment)] != segment:
                return None, used
            path = path[len(segment) :]
            ref = node[1]
        else:
            raise BundleError(f"trie proof: a node has {len(node)} items")
        if isinstance(ref, list):
            node = ref  # embedded node (its RLP is shorter than 32 bytes)
        elif ref == b"":
            return None, used
        elif len(ref) == 32:
            node = rlp.decode(fetch(ref, used))
            used += 1
        else:
            raise BundleError("trie proof: bad child reference")


def prove_list_item(items: Sequence[bytes], index: int) -> list[bytes]:
    """Proof (root-first node RLPs) of ``items[index]`` in the list trie ``{rlp(i): item}``."""
    db: dict[bytes, bytes] = {}
    trie = HexaryTrie(db)
    with trie.squash_changes() as batch:
        for i, item in enumerate(items):
            batch[rlp.encode(i)] = item
    proof: list[bytes] = []

    def fetch(h: bytes, _used: int) -> bytes:
        proof.append(db[h])
        return db[h]

    value, _ = _walk(trie.root_hash, rlp.encode(index), fetch)
    assert value == items[index]
    return proof


def verify_list_proof(root: bytes, index: int, proof: Sequence[bytes], where: str) -> bytes:
    """The value at ``rlp(index)`` under ``root`` proven by ``proof`` (each node must hash
    to the reference that leads to it, and every node must be used)."""

    def fetch(h: bytes, used: int) -> bytes:
        if used >= len(proof):
            raise BundleError(f"{where}: proof ends before the value is reached")
        node = proof[used]
        if keccak(node) != h:
            raise BundleError(f"{where}: proof node {used} does not hash to its reference")
        return node

    try:
        value, used = _walk(root, rlp.encode(index), fetch)
    except rlp.exceptions.RLPException as exc:
        raise BundleError(f"{where}: malformed proof node: {exc}") from exc
    if value is None:
        raise BundleError(f"{where}: the proof shows no value at index {index}")
    if used != len(proof):
        raise BundleError(f"{where}: {len(proof) - used} proof nodes are not on the path")
    return bytes(value)


# ---------------------------------------------------------------- validator-set chain


def validator_set_chain(
    reader: ChainReader, genesis: Genesis, up_to_epoch: int
) -> tuple[list[dict[str, Any]], dict[bytes, bytes], dict[int, ValidatorSet]]:
    """Entries proving the sets of epochs ``2..up_to_epoch`` from stored data, the pooled
    witness nodes, and the sets. Raises :class:`VerificationFailed` if stored data is bad."""
    length = genesis.consensus.epoch_length
    sets = {0: genesis_set(genesis, 0), 1: genesis_set(genesis, 1)}
    entries: list[dict[str, Any]] = []
    pool: dict[bytes, bytes] = {}
    for epoch in range(2, up_to_epoch + 1):
        height = (epoch - 1) * length
        row = reader.block_row(height)
        if row is None:
            raise VerificationFailed(height, "missing", "boundary block is missing")
        _hash, header_bytes, seal = row
        header = check_boundary(height, header_bytes, seal, genesis, sets[epoch - 1])
        try:
            answer, witness = record_members(
                reader.state_node, header, genesis.consensus.engine, genesis.gas_limit
            )
        except WitnessError as exc:
            raise VerificationFailed(height, "validator_set", str(exc)) from exc
        sets[epoch] = next_set(epoch, answer, sets[epoch - 1], height)
        pool.update(witness)
        entries.append(
            {
                "epoch": epoch,
                "boundary": {
                    "height": height,
                    "hash": hx(keccak(header_bytes)),
                    "header": hx(header_bytes),
                    "certificate": hx(seal),
                },
                "answer": [hx(m) for m in answer],
                "members": [hx(m) for m in sets[epoch].members],
                "witness": sorted(hx(k) for k in witness),
            }
        )
    return entries, pool, sets


def check_validator_set_chain(
    entries: object, nodes: object, genesis: Genesis, up_to_epoch: int, where: str = ""
) -> dict[int, ValidatorSet]:
    """Verify a validator-set chain offline; returns the set of every epoch ``0..up_to``."""
    length = genesis.consensus.epoch_length
    engine = genesis.consensus.engine
    items = _list(entries, f"{where}validator_sets")
    if not isinstance(nodes, dict):
        raise BundleError(f"{where}state_nodes: expected an object")
    pool: dict[bytes, bytes] = {}
    for key, value in nodes.items():
        k = unhex(key, f"{where}state_nodes key", 32)
        v = unhex(value, f"{where}state_nodes[{key}]")
        if keccak(v) != k:
            raise BundleError(f"{where}state_nodes[{key}]: the node does not hash to its key")
        pool[k] = v
    if len(items) != max(0, up_to_epoch - 1):
        raise BundleError(
            f"{where}validator_sets: {len(items)} entries, epochs 2..{up_to_epoch} need "
            f"{max(0, up_to_epoch - 1)}"
        )
    sets = {0: genesis_set(genesis, 0), 1: genesis_set(genesis, 1)}
    used: set[bytes] = set()
    for i, item in enumerate(items):
        epoch = i + 2
        at = f"{where}validator_sets[{i}]"
        entry = _obj(item, at, ("epoch", "boundary", "answer", "members", "witness"))
        _same(_int(entry["epoch"], f"{at}.epoch"), epoch, f"{at}.epoch")
        boundary = _obj(
            entry["boundary"], f"{at}.boundary", ("height", "hash", "header", "certificate")
        )
        height = (epoch - 1) * length
        _same(_int(boundary["height"], f"{at}.boundary.height"), height, f"{at}.boundary.height")
        header_bytes = unhex(boundary["header"], f"{at}.boundary.header")
        _same(
            unhex(boundary["hash"], f"{at}.boundary.hash", 32),
            keccak(header_bytes),
            f"{at}.boundary.hash",
        )
        seal = unhex(boundary["certificate"], f"{at}.boundary.certificate")
        try:
            header = check_boundary(height, header_bytes, seal, genesis, sets[epoch - 1])
        except VerificationFailed as exc:
            raise BundleError(f"{at}: boundary block {exc.height}: {exc.message}") from exc
        witness: dict[bytes, bytes] = {}
        for j, key in enumerate(_list(entry["witness"], f"{at}.witness")):
            k = unhex(key, f"{at}.witness[{j}]", 32)
            if k not in pool:
                raise BundleError(f"{at}.witness[{j}]: node {key} is not in state_nodes")
            witness[k] = pool[k]
            used.add(k)
        try:
            answer = replay_members(witness, header, engine, genesis.gas_limit)
        except WitnessError as exc:
            raise BundleError(
                f"{at}: witness does not prove the set of epoch {epoch}: {exc}"
            ) from exc
        _same(entry["answer"], [hx(m) for m in answer], f"{at}.answer")
        try:
            sets[epoch] = next_set(epoch, answer, sets[epoch - 1], height)
        except VerificationFailed as exc:
            raise BundleError(f"{at}: {exc.message}") from exc
        _same(entry["members"], [hx(m) for m in sets[epoch].members], f"{at}.members")
    unused = set(pool) - used
    if unused:
        raise BundleError(f"{where}state_nodes: 0x{min(unused).hex()} is used by no witness")
    return sets


# ---------------------------------------------------------------- building


@dataclass(frozen=True)
class BundleSummary:
    """What a checked bundle proves (printed by ``audit check``)."""

    chain_id: int
    subject: dict[str, Any]
    transactions: list[dict[str, Any]]  # hash, height, index, sender, status
    epochs: int

    def to_json(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "ok": True,
            "chain_id": self.chain_id,
            "subject": self.subject,
            "transactions": self.transactions,
            "validator_set_epochs": self.epochs,
        }


def _tx_proof(reader: ChainReader, genesis: Genesis, tx_hash: bytes) -> tuple[dict[str, Any], int]:
    location = reader.tx_location(tx_hash)
    if location is None:
        raise InvalidInput(f"transaction {hx(tx_hash)} is not in this chain store")
    height, index = location
    stored = next(iter(reader.blocks(height, height)), None)
    if stored is None or index >= len(stored.txs) or bytes(stored.txs[index][0]) != tx_hash:
        raise VerificationFailed(height, "transactions", f"stored rows of {hx(tx_hash)} disagree")
    header = decode_header(stored.header, height)
    raws = [bytes(t[2]) for t in stored.txs]
    encoded, _bloom, _gas = stored_receipts(stored, raws)
    decoded = decode_transaction(raws[index], genesis.chain_id)
    try:
        cert = CommitCertificate.decode(stored.seal)
    except CertificateError as exc:
        raise VerificationFailed(height, "certificate", f"certificate: {exc}") from exc
    proof = {
        "transaction": {
            "hash": hx(tx_hash),
            "index": index,
            "raw": hx(raws[index]),
            "sender": hx(decoded.sender),
        },
        "receipt": _receipt_json(encoded[index]),
        "block": {
            "height": height,
            "hash": hx(keccak(stored.header)),
            "header": hx(stored.header),
            "fields": header_json(header),
            "certificate": hx(stored.seal),
            "certificate_fields": certificate_json(cert),
        },
        "transaction_proof": [hx(n) for n in prove_list_item(raws, index)],
        "receipt_proof": [hx(n) for n in prove_list_item(encoded, index)],
    }
    return proof, height


def _receipt_json(encoded: bytes) -> dict[str, Any]:
    tx_type = raw_tx_type(encoded)
    body = encoded if tx_type == 0 else encoded[1:]
    status, cumulative, bloom, logs = rlp.decode(body)
    return {
        "encoded": hx(encoded),
        "type": tx_type,
        "status": 1 if status == b"\x01" else 0,
        "cumulative_gas_used": int.from_bytes(cumulative, "big"),
        "logs_bloom": hx(bloom),
        "logs": [
            {"address": hx(a), "topics": [hx(t) for t in ts], "data": hx(d)} for a, ts, d in logs
        ],
    }


def _event_topic(name: str) -> bytes:
    from contracts import load_artifact

    abi = load_artifact("ModelRegistry").abi
    item = next(e for e in abi if e.get("type") == "event" and e["name"] == name)
    return keccak(f"{name}({','.join(i['type'] for i in item['inputs'])})".encode())


def _event_txs(reader: ChainReader, event: str, topic1: int) -> list[bytes]:
    rows = reader.conn.execute(
        "SELECT tx_hash FROM logs WHERE address = ? AND topic0 = ? AND topic1 = ? "
        "ORDER BY height, log_index",
        (bytes(REGISTRY_ADDRESS), _event_topic(event), topic1.to_bytes(32, "big")),
    ).fetchall()
    return [bytes(r[0]) for r in rows]


def resolve_model(reader: ChainReader, ref: str) -> tuple[dict[str, Any], list[bytes]]:
    """``NAME@REF`` (version number, alias or ``latest``) -> subject and registering tx.

    Resolved from the store's registry logs as of its head (an alias resolves to the
    version it points to now)."""
    name, sep, at = ref.partition("@")
    if not name:
        raise InvalidInput(f"--model: expected NAME@REF, got {ref!r}")
    at = at if sep else "latest"
    registered = _model_versions(reader, name)
    if not registered:
        raise InvalidInput(f"model {name!r} has no registered version in this store")
    if at.isdigit():
        version = int(at)
    elif at == "latest":
        version = max(registered)
    else:
        version = _alias_target(reader, name, at, registered)
    if version not in registered:
        raise InvalidInput(f"model {name!r} has no version {at}")
    version_id, tx_hash = registered[version]
    subject = {"kind": "model", "name": name, "version": version, "version_id": version_id}
    return subject, [tx_hash]


def _model_versions(reader: ChainReader, name: str) -> dict[int, tuple[int, bytes]]:
    rows = reader.conn.execute(
        "SELECT topic1, data, tx_hash FROM logs WHERE address = ? AND topic0 = ? "
        "ORDER BY height, log_index",
        (bytes(REGISTRY_ADDRESS), _event_topic("ModelVersionRegistered")),
    ).fetchall()
    out: dict[int, tuple[int, bytes]] = {}
    for topic1, data, tx_hash in rows:
        fields = _decode_registered(bytes(data))
        if fields[0] == name:
            out[fields[1]] = (int.from_bytes(bytes(topic1), "big"), bytes(tx_hash))
    return out


_REGISTERED_TYPES: Final = [
    "string",
    "uint256",
    "uint256",
    "string",
    "uint256[]",
    "uint256[]",
    "bytes32",
    "uint256",
    "uint256",
]


def _decode_registered(data: bytes) -> tuple[str, int]:
    values = abi_decode(_REGISTERED_TYPES, data)
    return str(values[0]), int(values[1])


def _alias_target(
    reader: ChainReader, name: str, alias: str, registered: Mapping[int, tuple[int, bytes]]
) -> int:
    rows = reader.conn.execute(
        "SELECT topic1, data FROM logs WHERE address = ? AND topic0 = ? ORDER BY height, log_index",
        (bytes(REGISTRY_ADDRESS), _event_topic("AliasMoved")),
    ).fetchall()
    target: int | None = None
    for topic1, data in rows:
        model, alias_name, _block = abi_decode(["string", "string", "uint256"], bytes(data))
        if model == name and alias_name == alias:
            target = int.from_bytes(bytes(topic1), "big")
    if not target:
        raise InvalidInput(f"model {name!r} has no alias {alias!r}")
    by_id = {vid: v for v, (vid, _) in registered.items()}
    return by_id[target]


def resolve_round(reader: ChainReader, round_id: int) -> tuple[dict[str, Any], list[bytes]]:
    """A round -> subject and its opening and closing (or cancelling) transactions."""
    opened = _event_txs(reader, "RoundOpened", round_id)
    if not opened:
        raise InvalidInput(f"round {round_id} was never opened in this store")
    ended = _event_txs(reader, "RoundClosed", round_id) or _event_txs(
        reader, "RoundCancelled", round_id
    )
    return {"kind": "round", "round_id": round_id}, opened[:1] + ended[:1]


def build_bundle(
    reader: ChainReader, genesis: Genesis, tx_hashes: Sequence[bytes], subject: dict[str, Any]
) -> dict[str, Any]:
    """A bundle proving ``tx_hashes`` (in this order) for ``subject``."""
    proofs = []
    top_epoch = 0
    for tx_hash in tx_hashes:
        proof, height = _tx_proof(reader, genesis, tx_hash)
        proofs.append(proof)
        top_epoch = max(top_epoch, height // genesis.consensus.epoch_length)
    entries, pool, _sets = validator_set_chain(reader, genesis, top_epoch)
    return {
        "format": BUNDLE_FORMAT,
        "version": BUNDLE_VERSION,
        "chain_id": genesis.chain_id,
        "genesis_hash": hx(genesis_header(genesis).hash()),
        "engine": genesis.consensus.engine,
        "epoch_length": genesis.consensus.epoch_length,
        "subject": subject,
        "proofs": proofs,
        "validator_sets": entries,
        "state_nodes": {hx(k): hx(v) for k, v in sorted(pool.items())},
    }


# ---------------------------------------------------------------- checking


def check_bundle(bundle: object, genesis: Genesis) -> BundleSummary:
    """Verify a bundle offline against ``genesis``; :class:`BundleError` says why not."""
    try:
        return _check_bundle(bundle, genesis)
    except BundleError:
        raise
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
        raise BundleError(f"malformed bundle: {exc!r}") from exc


def _check_bundle(bundle: object, genesis: Genesis) -> BundleSummary:
    doc = _obj(
        bundle,
        "bundle",
        (
            "format",
            "version",
            "chain_id",
            "genesis_hash",
            "engine",
            "epoch_length",
            "subject",
            "proofs",
            "validator_sets",
            "state_nodes",
        ),
    )
    _same(doc["format"], BUNDLE_FORMAT, "format")
    _same(doc["version"], BUNDLE_VERSION, "version")
    check_network(doc, genesis)
    proofs = _list(doc["proofs"], "proofs")
    if not proofs:
        raise BundleError("proofs: the bundle proves no transaction")
    length = genesis.consensus.epoch_length
    heights = []
    for i, proof in enumerate(proofs):
        block = _obj(proof, f"proofs[{i}]", _PROOF_KEYS)["block"]
        height = _int(
            _obj(block, f"proofs[{i}].block", _BLOCK_KEYS)["height"], f"proofs[{i}].block.height"
        )
        heights.append(height)
    sets = check_validator_set_chain(
        doc["validator_sets"], doc["state_nodes"], genesis, max(heights) // length
    )
    checked = [_check_proof(p, f"proofs[{i}]", genesis, sets) for i, p in enumerate(proofs)]
    _check_subject(doc["subject"], checked)
    summary = [
        {
            "hash": hx(c.tx_hash),
            "height": c.height,
            "index": c.index,
            "sender": hx(c.sender),
            "status": c.status,
            "block_hash": hx(c.block_hash),
        }
        for c in checked
    ]
    return BundleSummary(genesis.chain_id, doc["subject"], summary, len(doc["validator_sets"]))


def check_network(doc: Mapping[str, Any], genesis: Genesis) -> None:
    """chain id, genesis hash, engine and epoch length are the genesis file's."""
    _same(doc["chain_id"], genesis.chain_id, "chain_id")
    _same(doc["genesis_hash"], hx(genesis_header(genesis).hash()), "genesis_hash")
    _same(doc["engine"], genesis.consensus.engine, "engine")
    _same(doc["epoch_length"], genesis.consensus.epoch_length, "epoch_length")


_PROOF_KEYS: Final = ("transaction", "receipt", "block", "transaction_proof", "receipt_proof")
_BLOCK_KEYS: Final = ("height", "hash", "header", "fields", "certificate", "certificate_fields")


@dataclass(frozen=True)
class _Checked:
    tx_hash: bytes
    height: int
    index: int
    sender: bytes
    status: int
    block_hash: bytes
    logs: list[tuple[bytes, list[bytes], bytes]]


def _check_proof(
    proof: dict[str, Any], at: str, genesis: Genesis, sets: Mapping[int, ValidatorSet]
) -> _Checked:
    block = proof["block"]
    height = block["height"]
    header_bytes = unhex(block["header"], f"{at}.block.header")
    block_hash = keccak(header_bytes)
    _same(unhex(block["hash"], f"{at}.block.hash", 32), block_hash, f"{at}.block.hash")
    try:
        header = decode_header(header_bytes, height)
    except VerificationFailed as exc:
        raise BundleError(f"{at}.block.header: {exc.message}") from exc
    vset = sets[height // genesis.consensus.epoch_length]
    seal = unhex(block["certificate"], f"{at}.block.certificate")
    try:
        check_header_fields(header, height, genesis, vset)
        check_certificate(seal, block_hash, height, genesis.chain_id, engine_id(genesis), vset)
    except VerificationFailed as exc:
        raise BundleError(f"{at}.block: block {height}: {exc.message}") from exc
    _same(block["fields"], header_json(header), f"{at}.block.fields")
    _same(
        block["certificate_fields"],
        certificate_json(CommitCertificate.decode(seal)),
        f"{at}.block.certificate_fields",
    )
    tx = _obj(proof["transaction"], f"{at}.transaction", ("hash", "index", "raw", "sender"))
    index = _int(tx["index"], f"{at}.transaction.index")
    raw = unhex(tx["raw"], f"{at}.transaction.raw")
    _same(unhex(tx["hash"], f"{at}.transaction.hash", 32), keccak(raw), f"{at}.transaction.hash")
    try:
        decoded = decode_transaction(raw, genesis.chain_id)
    except TwinChainError as exc:
        raise BundleError(f"{at}.transaction.raw: {exc}") from exc
    _same(
        unhex(tx["sender"], f"{at}.transaction.sender", 20),
        bytes(decoded.sender),
        f"{at}.transaction.sender",
    )
    proven_tx = verify_list_proof(
        header.transactions_root,
        index,
        [
            unhex(n, f"{at}.transaction_proof[{j}]")
            for j, n in enumerate(_list(proof["transaction_proof"], f"{at}.transaction_proof"))
        ],
        f"{at}.transaction_proof",
    )
    _same(hx(proven_tx), tx["raw"], f"{at}.transaction.raw (in transactions_root)")
    receipt = _obj(
        proof["receipt"],
        f"{at}.receipt",
        ("encoded", "type", "status", "cumulative_gas_used", "logs_bloom", "logs"),
    )
    encoded = unhex(receipt["encoded"], f"{at}.receipt.encoded")
    proven_receipt = verify_list_proof(
        header.receipts_root,
        index,
        [
            unhex(n, f"{at}.receipt_proof[{j}]")
            for j, n in enumerate(_list(proof["receipt_proof"], f"{at}.receipt_proof"))
        ],
        f"{at}.receipt_proof",
    )
    _same(hx(proven_receipt), receipt["encoded"], f"{at}.receipt.encoded (in receipts_root)")
    try:
        decoded_receipt = _receipt_json(encoded)
    except (rlp.exceptions.RLPException, ValueError) as exc:
        raise BundleError(f"{at}.receipt.encoded: malformed: {exc}") from exc
    _same(receipt, decoded_receipt, f"{at}.receipt")
    _same(receipt["type"], raw_tx_type(raw), f"{at}.receipt.type")
    _same(
        receipt_encoding(
            receipt["type"],
            receipt["status"],
            receipt["cumulative_gas_used"],
            unhex(receipt["logs_bloom"], "logs_bloom"),
            [
                [
                    unhex(lg["address"], "log"),
                    [unhex(t, "topic") for t in lg["topics"]],
                    unhex(lg["data"], "log"),
                ]
                for lg in receipt["logs"]
            ],
        ),
        encoded,
        f"{at}.receipt (canonical encoding)",
    )
    logs = [
        (
            unhex(lg["address"], "log"),
            [unhex(t, "topic") for t in lg["topics"]],
            unhex(lg["data"], "log"),
        )
        for lg in receipt["logs"]
    ]
    return _Checked(
        keccak(raw), height, index, bytes(decoded.sender), receipt["status"], block_hash, logs
    )


def _check_subject(subject: object, checked: list[_Checked]) -> None:
    if not isinstance(subject, dict) or "kind" not in subject:
        raise BundleError("subject: expected an object with a kind")
    kind = subject["kind"]
    if kind == "transaction":
        _obj(subject, "subject", ("kind", "tx_hash"))
        if len(checked) != 1:
            raise BundleError("subject: a transaction bundle proves exactly one transaction")
        _same(subject["tx_hash"], hx(checked[0].tx_hash), "subject.tx_hash")
        return
    registry_logs = [
        (ts, data) for c in checked for addr, ts, data in c.logs if addr == bytes(REGISTRY_ADDRESS)
    ]
    if kind == "model":
        _obj(subject, "subject", ("kind", "name", "version", "version_id"))
        if len(checked) != 1:
            raise BundleError("subject: a model bundle proves its registering transaction")
        version_id = _int(subject["version_id"], "subject.version_id")
        topic = _event_topic("ModelVersionRegistered")
        for ts, data in registry_logs:
            if ts[0] == topic and int.from_bytes(ts[1], "big") == version_id:
                name, version = _decode_registered(data)
                _same(subject["name"], name, "subject.name")
                _same(subject["version"], version, "subject.version")
                return
        raise BundleError(f"subject: no ModelVersionRegistered event for version id {version_id}")
    if kind == "round":
        _obj(subject, "subject", ("kind", "round_id"))
        round_id = _int(subject["round_id"], "subject.round_id")
        wanted = [_event_topic("RoundOpened")]
        if len(checked) == 2:
            wanted.append(_event_topic("RoundClosed"))
        if len(checked) not in (1, 2):
            raise BundleError("subject: a round bundle proves its opening and closing transactions")
        for i, topic in enumerate(wanted):
            found = any(
                addr == bytes(REGISTRY_ADDRESS)
                and ts[0] == topic
                and int.from_bytes(ts[1], "big") == round_id
                for addr, ts, _ in checked[i].logs
            )
            if not found and i == 1:
                cancelled = _event_topic("RoundCancelled")
                found = any(
                    addr == bytes(REGISTRY_ADDRESS)
                    and ts[0] == cancelled
                    and int.from_bytes(ts[1], "big") == round_id
                    for addr, ts, _ in checked[i].logs
                )
            if not found:
                raise BundleError(f"subject: proofs[{i}] does not open/close round {round_id}")
        return
    raise BundleError(f"subject.kind: unknown kind {kind!r}")


def load_json(path: Path) -> Any:
    """Read a JSON file; InvalidInput if unreadable."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InvalidInput(f"{path}: not a readable JSON file: {exc}") from exc
