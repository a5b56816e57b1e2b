"""RegistryPolicy: which artifacts a transaction registers, and honest aggregates only."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from contracts import MODEL_REGISTRY_ADDRESS
from node.blobs import ArtifactDigest, BlobStore
from node.chain.executor import Executor
from node.chain.store import ChainStore
from node.chain.tx import SignedTx, decode_transaction
from node.chain.types import REGISTRY_ADDRESS
from registry.api.contract import encode_call
from registry.fl import aggregate_bytes, encode_dense, encode_sparse, save_model
from registry.policy import RegistryPolicy
from tests.chain.helpers import CHAIN_ID, SENDERS, VALIDATORS, Key, genesis_state, produce, sign

MINER = VALIDATORS[0]
PUBLISHER, TWIN_A, TWIN_B = SENDERS[0], SENDERS[1], SENDERS[2]


def _model() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    return {
        "w": rng.standard_normal((4, 3)).astype(np.float32),
        "b": rng.standard_normal(3).astype(np.float32),
    }


def _delta(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {k: rng.standard_normal(v.shape).astype(np.float32) for k, v in _model().items()}


class Chain:
    """A store + executor + blob store, and the nonces of the test accounts."""

    def __init__(self, executor: Executor, blobs: BlobStore) -> None:
        self.executor = executor
        self.blobs = blobs
        self.nonces: dict[bytes, int] = {}

    def tx(self, sender: Key, function: str, *args: object) -> bytes:
        nonce = self.nonces.get(sender.address, 0)
        self.nonces[sender.address] = nonce + 1
        data = encode_call(function, *args)
        return sign(sender, nonce, REGISTRY_ADDRESS, data, gas=5_000_000)

    def run(self, *txs: bytes) -> None:
        result = produce(self.executor, list(txs))
        assert all(r.status == 1 for r in result.receipts), "a setup transaction reverted"


@pytest.fixture
def chain(tmp_path: Path) -> Iterator[Chain]:
    with ChainStore.open(tmp_path / "chain.db", genesis_state()) as store:
        yield Chain(Executor(store), BlobStore(tmp_path / "blobs", max_blob_bytes=1 << 24))


RoundSetup = tuple[bytes, list[bytes], list[int]]


@pytest.fixture
def open_round(chain: Chain) -> RoundSetup:
    """Base model v1 registered, round 1 open on it, a dense and a sparse update pushed."""
    base = save_model(_model())
    chain.blobs.put_bytes(base)
    d = ArtifactDigest.of(base)
    chain.run(
        chain.tx(
            PUBLISHER, "registerModel", "twin", d.raw, len(base), "safetensors", [], [], bytes(32)
        )
    )
    chain.run(chain.tx(PUBLISHER, "openRound", "twin", 1, 2, 1000))
    updates = [encode_dense(_delta(1)), encode_sparse(_delta(2), k=2)]
    txs = []
    for twin, (kind, blob) in zip((TWIN_A, TWIN_B), enumerate(updates), strict=True):
        chain.blobs.put_bytes(blob)
        digest = ArtifactDigest.of(blob).raw
        txs.append(
            chain.tx(twin, "pushUpdate", 1, digest, len(blob), 10 * (kind + 1), kind, bytes(32))
        )
    chain.run(*txs)
    return base, updates, [10, 20]


def _close(chain: Chain, digest: bytes, size: int, strategy: str = "fedavg") -> SignedTx:
    raw = chain.tx(MINER, "closeRound", 1, strategy, [1, 2], digest, size)
    return decode_transaction(raw, CHAIN_ID)


def test_artifacts_of_names_each_registered_artifact(chain: Chain) -> None:
    policy = RegistryPolicy()
    d = ArtifactDigest.of(b"x")
    cases = {
        "registerDataset": ("ds", d.raw, 5, "text/csv", bytes(32)),
        "registerModel": ("m", d.raw, 5, "safetensors", [], [], bytes(32)),
        "pushUpdate": (1, d.raw, 5, 3, 0, bytes(32)),
        "closeRound": (1, "fedavg", [1], d.raw, 5),
    }
    for function, args in cases.items():
        tx = decode_transaction(chain.tx(PUBLISHER, function, *args), CHAIN_ID)
        assert policy.artifacts_of(tx) == ((d, 5),), function


def test_artifacts_of_ignores_other_transactions(chain: Chain) -> None:
    policy = RegistryPolicy()
    alias = decode_transaction(chain.tx(PUBLISHER, "setAlias", "m", "prod", 1), CHAIN_ID)
    elsewhere = decode_transaction(
        sign(
            PUBLISHER,
            99,
            VALIDATORS[1].address,
            encode_call("registerModel", "m", b"\1" * 32, 5, "f", [], [], bytes(32)),
        ),
        CHAIN_ID,
    )
    garbage = decode_transaction(sign(PUBLISHER, 98, REGISTRY_ADDRESS, b"\x01\x02"), CHAIN_ID)
    empty = decode_transaction(
        chain.tx(PUBLISHER, "registerDataset", "ds", bytes(32), 5, "t", bytes(32)), CHAIN_ID
    )
    for tx in (alias, elsewhere, garbage, empty):
        assert policy.artifacts_of(tx) == ()
    assert MODEL_REGISTRY_ADDRESS.endswith(bytes(REGISTRY_ADDRESS).hex())


def test_honest_aggregate_passes_and_commits(chain: Chain, open_round: RoundSetup) -> None:
    base, updates, samples = open_round
    model, hex_digest = aggregate_bytes(base, updates, samples, "fedavg")
    tx = _close(chain, bytes.fromhex(hex_digest), len(model))
    parent = chain.executor.store.head()
    assert RegistryPolicy().check(tx, parent, chain.executor, chain.blobs) is None
    result = produce(chain.executor, [tx.raw])
    assert result.receipts[0].status == 1


def test_wrong_aggregate_digest_is_refused_with_reason(
    chain: Chain, open_round: RoundSetup
) -> None:
    base, updates, samples = open_round
    _, hex_digest = aggregate_bytes(base, updates, samples, "fedavg")
    lie, _ = aggregate_bytes(base, updates, samples, "median")
    lying = ArtifactDigest.of(lie)
    tx = _close(chain, lying.raw, len(lie))
    reason = RegistryPolicy().check(tx, chain.executor.store.head(), chain.executor, chain.blobs)
    assert reason == (
        f"closeRound of round 1: aggregate digest mismatch: the transaction records {lying}, "
        f"recomputing fedavg over updates [1, 2] gives sha256:{hex_digest}"
    )


def test_wrong_aggregate_size_is_refused(chain: Chain, open_round: RoundSetup) -> None:
    base, updates, samples = open_round
    model, hex_digest = aggregate_bytes(base, updates, samples, "fedavg")
    tx = _close(chain, bytes.fromhex(hex_digest), len(model) + 1)
    reason = RegistryPolicy().check(tx, chain.executor.store.head(), chain.executor, chain.blobs)
    assert reason is not None and "aggregate size mismatch" in reason


def test_missing_update_blob_is_refused_unless_fetched(
    chain: Chain, open_round: RoundSetup
) -> None:
    base, updates, samples = open_round
    model, hex_digest = aggregate_bytes(base, updates, samples, "fedavg")
    missing = ArtifactDigest.of(updates[1])
    chain.blobs.delete(missing)
    tx = _close(chain, bytes.fromhex(hex_digest), len(model))
    head = chain.executor.store.head()
    reason = RegistryPolicy().check(tx, head, chain.executor, chain.blobs)
    assert reason == (
        f"closeRound of round 1: update 2 blob {missing} ({len(updates[1])} bytes) "
        "is not held by this miner"
    )

    asked: list[ArtifactDigest] = []

    def fetch(digest: ArtifactDigest, size: int) -> bool:
        asked.append(digest)
        chain.blobs.put_bytes(updates[1], expected=digest)
        return True

    assert RegistryPolicy(fetch=fetch).check(tx, head, chain.executor, chain.blobs) is None
    assert asked == [missing]


def test_corrupt_update_blob_is_refused(chain: Chain, open_round: RoundSetup) -> None:
    base, updates, samples = open_round
    model, hex_digest = aggregate_bytes(base, updates, samples, "fedavg")
    path = chain.blobs.path(ArtifactDigest.of(updates[0]))
    os.chmod(path, 0o644)
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    tx = _close(chain, bytes.fromhex(hex_digest), len(model))
    reason = RegistryPolicy().check(tx, chain.executor.store.head(), chain.executor, chain.blobs)
    assert reason is not None and "update 1 blob" in reason and "corrupt on disk" in reason


def test_unknown_strategy_is_refused(chain: Chain, open_round: RoundSetup) -> None:
    tx = _close(chain, b"\1" * 32, 100, strategy="mean")
    reason = RegistryPolicy().check(tx, chain.executor.store.head(), chain.executor, chain.blobs)
    assert reason is not None
    assert reason.startswith(
        "closeRound of round 1: cannot recompute the aggregate: unknown strategy"
    )


def test_update_kind_contradicting_the_chain_is_refused(chain: Chain) -> None:
    base = save_model(_model())
    chain.blobs.put_bytes(base)
    d = ArtifactDigest.of(base)
    chain.run(chain.tx(PUBLISHER, "registerModel", "t", d.raw, len(base), "st", [], [], bytes(32)))
    chain.run(chain.tx(PUBLISHER, "openRound", "t", 1, 1, 1000))
    blob = encode_dense(_delta(3))
    chain.blobs.put_bytes(blob)
    # recorded as sparse (kind 1), but the blob is a dense update
    chain.run(
        chain.tx(TWIN_A, "pushUpdate", 1, ArtifactDigest.of(blob).raw, len(blob), 5, 1, bytes(32))
    )
    model, hex_digest = aggregate_bytes(base, [blob], [5], "fedavg")
    tx = decode_transaction(
        chain.tx(MINER, "closeRound", 1, "fedavg", [1], bytes.fromhex(hex_digest), len(model)),
        CHAIN_ID,
    )
    reason = RegistryPolicy().check(tx, chain.executor.store.head(), chain.executor, chain.blobs)
    assert (
        reason
        == "closeRound of round 1: update 1 is recorded as kind 1 (sparse) but its blob is 'dense'"
    )


def test_closing_a_closed_round_is_left_to_the_contract(
    chain: Chain, open_round: RoundSetup
) -> None:
    base, updates, samples = open_round
    model, hex_digest = aggregate_bytes(base, updates, samples, "fedavg")
    honest = _close(chain, bytes.fromhex(hex_digest), len(model))
    produce(chain.executor, [honest.raw])
    again = _close(chain, b"\2" * 32, 7)
    assert (
        RegistryPolicy().check(again, chain.executor.store.head(), chain.executor, chain.blobs)
        is None
    )


def test_round_unknown_at_parent_is_refused(chain: Chain) -> None:
    tx = decode_transaction(
        chain.tx(MINER, "closeRound", 5, "fedavg", [1], b"\1" * 32, 9), CHAIN_ID
    )
    reason = RegistryPolicy().check(tx, chain.executor.store.head(), chain.executor, chain.blobs)
    assert reason == "closeRound of round 5: round unknown at height 0"
