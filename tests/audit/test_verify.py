"""``audit verify`` on a real chain: an honest store verifies; one flipped byte anywhere
in a block, transaction, receipt, certificate or validator-set state fails at the right
height with the right reason."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from node.chain.block import Header
from registry.audit.source import MinerData
from registry.audit.verify import VerifyReport, verify_chain
from registry.audit.witness import record_members
from registry.cli import app
from tests.audit.verify_chain import EPOCH, BuiltChain, build_chain, copy_miner

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> BuiltChain:
    return build_chain(tmp_path_factory.mktemp("audit-chain"))


def _verify(chain: BuiltChain, data_dir: Path, **kw: object) -> VerifyReport:
    return verify_chain(MinerData.open(data_dir, chain.genesis), **kw)  # type: ignore[arg-type]


def _height_of(db: Path, tx_hash: bytes) -> int:
    with sqlite3.connect(db) as conn:
        return int(
            conn.execute("SELECT height FROM transactions WHERE hash = ?", (tx_hash,)).fetchone()[0]
        )


def _flip(
    db: Path, table: str, column: str, where: str, params: tuple[object, ...], offset: int
) -> None:
    """XOR one byte of one stored blob, in place, in a copy of a miner's store."""
    with sqlite3.connect(db) as conn:
        value = bytearray(
            conn.execute(f"SELECT {column} FROM {table} WHERE {where}", params).fetchone()[0]
        )
        value[offset] ^= 0x01
        conn.execute(f"UPDATE {table} SET {column} = ? WHERE {where}", (bytes(value), *params))


def test_honest_chain_verifies_on_every_miner_and_follows_the_validator_change(
    chain: BuiltChain,
) -> None:
    for data_dir in chain.data_dirs:
        report = _verify(chain, data_dir)
        assert report.ok, report.failure
        assert report.checked >= chain.shrunk_epoch * EPOCH + 1
    report = _verify(chain, chain.data_dirs[0])
    removed = chain.removed
    assert removed in report.epochs[chain.shrunk_epoch - 1]
    assert removed not in report.epochs[chain.shrunk_epoch]
    assert len(report.epochs[chain.shrunk_epoch]) == 3
    assert report.transactions >= 7 and report.signatures >= 2 * report.checked


def test_honest_chain_reexecutes_from_genesis_to_the_same_state_roots(chain: BuiltChain) -> None:
    report = _verify(chain, chain.data_dirs[1], reexecute=True)
    assert report.ok, report.failure
    assert report.reexecuted and report.checked == report.to_height + 1 > chain.head


def test_a_range_above_genesis_verifies_with_sets_followed_from_genesis(chain: BuiltChain) -> None:
    start = chain.shrunk_epoch * EPOCH
    report = _verify(chain, chain.data_dirs[0], from_height=start, to_height=chain.head)
    assert report.ok, report.failure
    assert report.checked == chain.head - start + 1
    assert chain.removed not in report.epochs[chain.shrunk_epoch]


def test_a_range_starting_or_ending_anywhere_in_an_epoch_verifies(
    chain: BuiltChain, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The set of epoch k is read from the state at block (k-1)E: a range starting in
    the middle of an epoch, or just after a boundary, derives the next epoch's set from
    the boundary block below it; any last height (a boundary, just before or after one)
    works too, serially and in several processes."""
    import registry.audit.verify as verify_module

    shrunk = chain.shrunk_epoch
    before, boundary = (shrunk - 1) * EPOCH, shrunk * EPOCH
    ranges = [
        (before + 2, chain.head),  # middle of the epoch before the change
        (before + 1, chain.head),  # just after a boundary
        (before + 2, boundary - 1),  # ends just before a boundary
        (before + 2, boundary),  # ends on a boundary
        (before + 1, boundary + 1),  # ends just after a boundary
        (boundary + 1, boundary + 1),  # one block just after a boundary
        (boundary, boundary),  # the boundary block alone
        (before + 3, before + 3),  # one block in the middle of an epoch
    ]
    for first, last in ranges:
        report = _verify(chain, chain.data_dirs[0], from_height=first, to_height=last)
        assert report.ok, (first, last, report.failure)
        assert report.checked == last - first + 1
        assert report.signatures >= 2 * report.checked
        if last >= boundary:
            assert chain.removed not in report.epochs[shrunk]
            assert len(report.epochs[shrunk]) == 3
    monkeypatch.setattr(verify_module, "PARALLEL_CHUNK", 2)  # several chunks, mid-epoch starts
    for first, last in ranges[:2]:
        serial = _verify(chain, chain.data_dirs[0], from_height=first, to_height=last)
        parallel = _verify(chain, chain.data_dirs[0], from_height=first, to_height=last, jobs=2)
        assert parallel.ok, (first, last, parallel.failure)
        assert (parallel.checked, parallel.signatures, parallel.epochs) == (
            serial.checked,
            serial.signatures,
            serial.epochs,
        )


def test_flipped_header_byte_fails_at_its_height(chain: BuiltChain, tmp_path: Path) -> None:
    data = copy_miner(chain, tmp_path / "copy")
    height = _height_of(data / "chain.db", chain.model_tx)
    _flip(data / "chain.db", "blocks", "header", "height = ?", (height,), -1)
    report = _verify(chain, data)
    assert report.failure is not None
    assert (report.failure.height, report.failure.field) == (height, "hash")
    assert "is not keccak(header)" in report.failure.message


def test_flipped_header_and_rehashed_row_breaks_the_next_link(
    chain: BuiltChain, tmp_path: Path
) -> None:
    """A forger who also fixes the stored hash is caught by the certificate (it signs the
    old hash) — the first failing check at that height."""
    data = copy_miner(chain, tmp_path / "copy")
    height = _height_of(data / "chain.db", chain.model_tx)
    with sqlite3.connect(data / "chain.db") as conn:
        header = Header.decode(
            conn.execute("SELECT header FROM blocks WHERE height = ?", (height,)).fetchone()[0]
        )
        forged = header.replace(timestamp=header.timestamp + 1)
        conn.execute(
            "UPDATE blocks SET header = ?, hash = ? WHERE height = ?",
            (forged.encode(), forged.hash(), height),
        )
    report = _verify(chain, data)
    assert report.failure is not None
    assert (report.failure.height, report.failure.field) == (height, "certificate")
    assert "certificate is for block hash" in report.failure.message


def test_flipped_transaction_byte_fails_at_its_height(chain: BuiltChain, tmp_path: Path) -> None:
    data = copy_miner(chain, tmp_path / "copy")
    height = _height_of(data / "chain.db", chain.close_tx)
    _flip(data / "chain.db", "transactions", "raw", "hash = ?", (chain.close_tx,), -40)
    report = _verify(chain, data)
    assert report.failure is not None
    assert (report.failure.height, report.failure.field) == (height, "transactions")
    assert "is not keccak(raw)" in report.failure.message


def test_flipped_transaction_with_matching_hash_fails_the_transactions_root(
    chain: BuiltChain, tmp_path: Path
) -> None:
    from eth_hash.auto import keccak

    data = copy_miner(chain, tmp_path / "copy")
    height = _height_of(data / "chain.db", chain.close_tx)
    with sqlite3.connect(data / "chain.db") as conn:
        raw = bytearray(
            conn.execute(
                "SELECT raw FROM transactions WHERE hash = ?", (chain.close_tx,)
            ).fetchone()[0]
        )
        raw[-40] ^= 0x01
        conn.execute(
            "UPDATE transactions SET raw = ?, hash = ? WHERE hash = ?",
            (bytes(raw), keccak(bytes(raw)), chain.close_tx),
        )
    report = _verify(chain, data)
    assert report.failure is not None
    assert (report.failure.height, report.failure.field) == (height, "transactions_root")
    assert report.failure.message.startswith("transactions_root mismatch (header 0x")


def test_flipped_receipt_log_byte_fails_the_receipts_root(
    chain: BuiltChain, tmp_path: Path
) -> None:
    data = copy_miner(chain, tmp_path / "copy")
    height = _height_of(data / "chain.db", chain.model_tx)
    _flip(data / "chain.db", "logs", "data", "tx_hash = ? AND log_index = 0", (chain.model_tx,), -1)
    report = _verify(chain, data)
    assert report.failure is not None
    assert (report.failure.height, report.failure.field) == (height, "receipts_root")
    assert "computed 0x" in report.failure.message


def test_receipt_field_outside_the_root_is_caught_by_reexecution(
    chain: BuiltChain, tmp_path: Path
) -> None:
    data = copy_miner(chain, tmp_path / "copy")
    height = _height_of(data / "chain.db", chain.model_tx)
    _flip(data / "chain.db", "transactions", "sender", "hash = ?", (chain.model_tx,), 0)
    assert _verify(chain, data).ok  # the sender column is not committed by receipts_root
    report = _verify(chain, data, reexecute=True)
    assert report.failure is not None
    assert (report.failure.height, report.failure.field) == (height, "receipts")
    assert "stored sender" in report.failure.message


def test_flipped_certificate_signature_byte_fails_naming_the_signature(
    chain: BuiltChain, tmp_path: Path
) -> None:
    data = copy_miner(chain, tmp_path / "copy")
    height = chain.shrunk_epoch * EPOCH + 1
    _flip(data / "chain.db", "blocks", "seal", "height = ?", (height,), -10)  # inside s
    report = _verify(chain, data)
    assert report.failure is not None
    assert (report.failure.height, report.failure.field) == (height, "certificate")
    assert "certificate signature" in report.failure.message
    assert report.failure.message.endswith("is invalid")


def test_altered_validator_set_state_fails_at_its_boundary_block(
    chain: BuiltChain, tmp_path: Path
) -> None:
    """Flip a byte of a state node that only the boundary block before the change reads
    when the members are computed: the derived set cannot be trusted, so verify stops
    there (and never accepts the 3-member certificates on a forged set)."""
    data = copy_miner(chain, tmp_path / "copy")
    miner = MinerData.open(data, chain.genesis)
    boundary = (chain.shrunk_epoch - 1) * EPOCH
    with sqlite3.connect(data / "chain.db") as conn:

        def read(key: bytes) -> bytes | None:
            row = conn.execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()
            return None if row is None else bytes(row[0])

        def header(h: int) -> Header:
            return Header.decode(
                conn.execute("SELECT header FROM blocks WHERE height = ?", (h,)).fetchone()[0]
            )

        engine, gas = miner.genesis.consensus.engine, miner.genesis.gas_limit
        _, at_boundary = record_members(read, header(boundary), engine, gas)
        earlier: set[bytes] = set()
        for h in range(EPOCH, boundary, EPOCH):
            earlier |= set(record_members(read, header(h), engine, gas)[1])
        only_here = sorted(set(at_boundary) - earlier)
        assert only_here
    _flip(data / "chain.db", "state", "value", "key = ?", (only_here[0],), -1)
    report = _verify(chain, data)
    assert report.failure is not None
    assert (report.failure.height, report.failure.field) == (boundary, "validator_set")
    assert f"state node 0x{only_here[0].hex()} is corrupt" in report.failure.message
    assert chain.shrunk_epoch not in report.epochs


def test_cli_exit_codes_and_json(chain: BuiltChain, tmp_path: Path) -> None:
    runner = CliRunner()
    data = chain.data_dirs[0]
    ok = runner.invoke(app, ["audit", "verify", "--data-dir", str(data), "--json"])
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.stdout)["ok"] is True
    copy = copy_miner(chain, tmp_path / "copy")
    height = _height_of(copy / "chain.db", chain.model_tx)
    _flip(copy / "chain.db", "blocks", "header", "height = ?", (height,), -1)
    bad = runner.invoke(
        app, ["audit", "verify", "--data-dir", str(copy), "--genesis", str(chain.genesis)]
    )
    assert bad.exit_code == 1
    assert f"FAILED at block {height} (hash)" in bad.stdout
    missing = runner.invoke(app, ["audit", "verify", "--data-dir", str(tmp_path / "nowhere")])
    assert missing.exit_code == 2
    assert "no chain.db" in missing.output
    above = runner.invoke(app, ["audit", "verify", "--data-dir", str(data), "--to", "999999"])
    assert above.exit_code == 2
    assert "above the stored head" in above.output


def test_parallel_verification_reports_the_same_first_failure(
    chain: BuiltChain, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import registry.audit.verify as verify_module

    monkeypatch.setattr(verify_module, "PARALLEL_CHUNK", 4)  # several chunks on a short chain
    data = copy_miner(chain, tmp_path / "copy")
    honest = _verify(chain, data, jobs=2)
    assert honest.ok, honest.failure
    assert (honest.checked, honest.signatures) == (
        _verify(chain, data).checked,
        _verify(chain, data).signatures,
    )
    late = chain.shrunk_epoch * EPOCH + 2
    early = _height_of(data / "chain.db", chain.close_tx)
    _flip(data / "chain.db", "blocks", "seal", "height = ?", (late,), -10)
    _flip(data / "chain.db", "transactions", "raw", "hash = ?", (chain.close_tx,), -40)
    serial, parallel = _verify(chain, data), _verify(chain, data, jobs=2)
    assert serial.failure is not None and serial.failure.height == early
    assert parallel.failure == serial.failure


def test_dpos_chain_verifies_with_confirm_certificates(tmp_path: Path) -> None:
    """A DPoS chain (four in-process replicas: real engines, stores and signatures; a
    5-block epoch, committees read from Election) verifies, re-executes, and a flipped
    CONFIRM signature byte is caught."""
    from tests.node.test_replica_cluster import Cluster

    cluster = Cluster(tmp_path / "dpos", "dpos", epoch_length=5)
    cluster.run(300)
    genesis = tmp_path / "genesis.json"
    genesis.write_text(json.dumps(cluster.genesis.to_json()))
    for replica in cluster.replicas:
        assert replica is not None
        replica.close()
    data = tmp_path / "dpos" / "node-0"
    report = verify_chain(MinerData.open(data, genesis), reexecute=True)
    assert report.ok, report.failure
    assert report.checked > 3 * 5 and max(report.epochs) >= 3
    _flip(data / "chain.db", "blocks", "seal", "height = ?", (12,), -10)
    failed = verify_chain(MinerData.open(data, genesis))
    assert failed.failure is not None
    assert (failed.failure.height, failed.failure.field) == (12, "certificate")


def test_fast_encoders_match_the_chain_packages() -> None:
    """The verifier's RLP, list-trie root and bloom give the chain package's bytes."""
    import os
    import random

    import rlp

    from node.chain.receipt import Log, bloom_of
    from node.chain.trie import trie_root
    from node.chain.types import Address, Hash32
    from registry.audit.verify import _bloom, list_trie_root, rlp_encode

    rng = random.Random(7)
    for n in [*range(0, 40), 127, 128, 129, 300]:
        items = [os.urandom(rng.choice([1, 2, 31, 32, 33, 200])) for _ in range(n)]
        assert list_trie_root(items) == trie_root(items)
    values: list[Any] = [
        b"",
        b"\x00",
        b"\x7f",
        b"\x80",
        b"a" * 55,
        b"a" * 56,
        0,
        1,
        128,
        2**70,
        [],
        [b"", [1, [b"x" * 70]]],
    ]
    for value in values:
        assert rlp_encode(value) == rlp.encode(value)
    logs = [
        Log(
            Address(os.urandom(20)),
            tuple(Hash32(os.urandom(32)) for _ in range(rng.randrange(5))),
            b"d",
        )
        for _ in range(20)
    ]
    assert _bloom([[lg.address, list(lg.topics), lg.data] for lg in logs]) == bloom_of(logs)


def test_fast_certificate_decoding_accepts_only_what_rlp_decodes_the_same(
    chain: BuiltChain,
) -> None:
    """The slice-based certificate decoder agrees with ``rlp.decode(strict=True)`` on
    every stored seal and on seals with random bytes changed: whatever it accepts, rlp
    decodes to the same values (anything else falls back to rlp and its error)."""
    import random

    import rlp

    from registry.audit.verify import _decode_certificate, _fast_certificate

    def by_rlp(seal: bytes) -> object:
        try:
            *ints, block_hash, sigs = rlp.decode(seal, strict=True)
            pairs = [(bytes(a), bytes(b)) for a, b in sigs]
        except (rlp.exceptions.RLPException, ValueError, TypeError):
            return None
        return (*(int.from_bytes(x, "big") for x in ints), block_hash, pairs)

    with sqlite3.connect(chain.data_dirs[0] / "chain.db") as conn:
        seals = [bytes(r[0]) for r in conn.execute("SELECT seal FROM blocks WHERE height > 0")]
    for height, seal in enumerate(seals, start=1):
        assert _fast_certificate(seal) == by_rlp(seal) == _decode_certificate(seal, height)
    rng = random.Random(11)
    accepted = 0
    for _ in range(3000):
        forged = bytearray(rng.choice(seals))
        for _ in range(rng.randint(1, 2)):
            forged[rng.randrange(len(forged))] = rng.randrange(256)
        fast = _fast_certificate(bytes(forged))
        if fast is not None:
            accepted += 1
            assert fast == by_rlp(bytes(forged)), bytes(forged).hex()
    assert accepted > 0
    empty = rlp.encode([1, 3, 9, 0, b"\x11" * 32, []])
    assert _fast_certificate(empty) == by_rlp(empty) == (1, 3, 9, 0, b"\x11" * 32, [])
    long_form = b"\xb8\x01\x05"  # non-canonical: a short string in long form
    payload = long_form + bytes(empty[2:])
    padded = b"\xf8" + bytes([len(payload)]) + payload  # and a short list in long form
    assert _fast_certificate(padded) is None and by_rlp(padded) is None
