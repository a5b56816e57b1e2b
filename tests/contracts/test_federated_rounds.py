"""ModelRegistry federated rounds: open, push updates, close with an aggregate, cancel."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from web3.contract import Contract

from contracts import Role, RoundStatus, UpdateKind
from tests.contracts.net import TestNet, assert_reverts, digest

NO_META = b"\x00" * 32
DENSE, SPARSE = int(UpdateKind.DENSE), int(UpdateKind.SPARSE)


def base_model(net: TestNet, name: str = "edge-net", label: str = "base") -> int:
    fn = net.registry.functions.registerModel(
        name, digest(label), 4096, "safetensors", [], [], NO_META
    )
    return int(net.result_of(fn, "publisher"))


def open_round(
    net: TestNet, base: int, min_updates: int = 2, window: int = 20, sender: str = "publisher"
) -> int:
    fn = net.registry.functions.openRound("edge-net", base, min_updates, net.block_number + window)
    return int(net.result_of(fn, sender))


def push(net: TestNet, round_id: int, twin: str, label: str | None = None) -> int:
    fn = net.registry.functions.pushUpdate(
        round_id, digest(label or f"{twin}@{round_id}"), 512, 100, DENSE, digest("metrics")
    )
    return int(net.result_of(fn, twin))


def close(net: TestNet, round_id: int, included: list[int], label: str = "aggregate") -> int:
    fn = net.registry.functions.closeRound(round_id, "fedavg", included, digest(label), 4096)
    return int(net.result_of(fn, "miner0"))


# ---------------------------------------------------------------- open


def test_open_round_records_its_parameters(net: TestNet) -> None:
    base = base_model(net)
    deadline = net.block_number + 10
    fn = net.registry.functions.openRound("edge-net", base, 3, deadline)
    receipt = net.send(fn, "miner1")  # miners may open rounds as well as publishers
    event = net.event(receipt, net.registry, "RoundOpened")
    assert event == {
        "round_id": 1,
        "base_version": base,
        "opener": net.accounts["miner1"],
        "model": "edge-net",
        "min_updates": 3,
        "deadline": deadline,
        "block": receipt["blockNumber"],
    }
    record = net.record(net.registry, "getRound", 1)
    assert record == {
        "model": "edge-net",
        "base_version": base,
        "min_updates": 3,
        "deadline": deadline,
        "opener": net.accounts["miner1"],
        "opened_block": receipt["blockNumber"],
        "status": RoundStatus.OPEN,
        "update_ids": [],
        "strategy": "",
        "included_update_ids": [],
        "result_version": 0,
        "closer": "0x0000000000000000000000000000000000000000",
        "closed_block": 0,
        "cancel_reason": "",
    }
    assert net.registry.functions.roundCount().call() == 1


@pytest.mark.parametrize("sender", ["twin0", "auditor", "admin0", "outsider"])
def test_open_round_requires_publisher_or_miner(net: TestNet, sender: str) -> None:
    base = base_model(net)
    fn = net.registry.functions.openRound("edge-net", base, 1, net.block_number + 5)
    assert_reverts(net, fn, sender, "not a PUBLISHER or MINER")


@pytest.fixture(scope="class")
def versions(session_net: TestNet) -> Iterator[TestNet]:
    """Model version 1 is live, version 2 is revoked."""
    with session_net.isolated():
        base_model(session_net)
        revoked = base_model(session_net, label="revoked")
        session_net.send(session_net.registry.functions.revokeVersion(revoked, "bad"), "publisher")
        yield session_net


class TestOpenRoundRejectsBadParameters:
    """Model version 1 is live, version 2 is revoked."""

    @pytest.mark.parametrize(
        ("model", "base", "min_updates", "window", "reason"),
        [
            ("", 1, 1, 5, "empty name"),
            ("edge-net", 0, 1, 5, "unknown version"),
            ("edge-net", 9, 1, 5, "unknown version"),
            ("edge-net", 2, 1, 5, "base version revoked"),
            ("edge-net", 1, 0, 5, "min_updates must be at least 1"),
            ("edge-net", 1, 129, 5, "min_updates above cap"),
            ("edge-net", 1, 1, 0, "deadline not in the future"),
        ],
    )
    def test_rejected(
        self,
        versions: TestNet,
        model: str,
        base: int,
        min_updates: int,
        window: int,
        reason: str,
    ) -> None:
        net = versions
        fn = net.registry.functions.openRound(model, base, min_updates, net.block_number + window)
        assert_reverts(net, fn, "publisher", reason)


# ---------------------------------------------------------------- push


def test_push_update_records_the_twin_and_its_numbers(net: TestNet) -> None:
    round_id = open_round(net, base_model(net))
    fn = net.registry.functions.pushUpdate(
        round_id, digest("u"), 2048, 640, SPARSE, digest("metrics-u")
    )
    receipt = net.send(fn, "twin1")
    expected = {
        "round_id": round_id,
        "twin": net.accounts["twin1"],
        "digest": digest("u"),
        "size": 2048,
        "samples": 640,
        "kind": SPARSE,
        "metrics_digest": digest("metrics-u"),
        "block": receipt["blockNumber"],
    }
    assert net.record(net.registry, "getUpdate", 1) == expected
    assert net.event(receipt, net.registry, "UpdatePushed") == {"update_id": 1, **expected}
    r = net.registry.functions
    assert r.updateOf(round_id, net.accounts["twin1"]).call() == 1
    assert r.updateOf(round_id, net.accounts["twin0"]).call() == 0
    assert r.updateIdByDigest(digest("u")).call() == 1
    assert r.updateCount().call() == 1
    assert net.record(net.registry, "getRound", round_id)["update_ids"] == [1]


@pytest.mark.parametrize("sender", ["publisher", "miner0", "admin0", "outsider"])
def test_push_update_requires_twin(net: TestNet, sender: str) -> None:
    round_id = open_round(net, base_model(net))
    fn = net.registry.functions.pushUpdate(round_id, digest("u"), 1, 1, DENSE, NO_META)
    assert_reverts(net, fn, sender, "not a TWIN")


@pytest.fixture(scope="class")
def round_with_update(session_net: TestNet) -> Iterator[TestNet]:
    """Round 1 is open and twin0 pushed the update labelled "taken" to it."""
    with session_net.isolated():
        open_round(session_net, base_model(session_net))
        push(session_net, 1, "twin0", label="taken")
        yield session_net


class TestPushUpdateRejectsBadFields:
    """Round 1 is open and twin0 pushed the update labelled "taken" to it."""

    @pytest.mark.parametrize(
        ("round_id", "blob", "size", "samples", "kind", "reason"),
        [
            (0, "u", 1, 1, DENSE, "unknown round"),
            (2, "u", 1, 1, DENSE, "unknown round"),
            (1, None, 1, 1, DENSE, "empty digest"),
            (1, "u", 0, 1, DENSE, "zero size"),
            (1, "u", 1, 0, DENSE, "zero samples"),
            (1, "u", 1, 1, 2, "invalid update kind"),
            (1, "taken", 1, 1, DENSE, "digest already registered"),
        ],
    )
    def test_rejected(
        self,
        round_with_update: TestNet,
        round_id: int,
        blob: str | None,
        size: int,
        samples: int,
        kind: int,
        reason: str,
    ) -> None:
        net = round_with_update
        update = NO_META if blob is None else digest(blob)
        fn = net.registry.functions.pushUpdate(round_id, update, size, samples, kind, NO_META)
        assert_reverts(net, fn, "twin1", reason)


def test_one_update_per_twin_per_round(net: TestNet) -> None:
    round_id = open_round(net, base_model(net))
    push(net, round_id, "twin0")
    fn = net.registry.functions.pushUpdate(round_id, digest("again"), 1, 1, DENSE, NO_META)
    assert_reverts(net, fn, "twin0", "twin already pushed to this round")


def test_update_accepted_at_deadline_and_rejected_after(net: TestNet) -> None:
    round_id = open_round(net, base_model(net), window=3)
    deadline = net.record(net.registry, "getRound", round_id)["deadline"]
    net.mine(deadline - net.block_number)
    assert net.block_number == deadline
    push(net, round_id, "twin0")
    fn = net.registry.functions.pushUpdate(round_id, digest("late"), 1, 1, DENSE, NO_META)
    assert_reverts(net, fn, "twin1", "round deadline passed")


def test_update_rejected_after_round_closed(net: TestNet) -> None:
    round_id = open_round(net, base_model(net), min_updates=1)
    close(net, round_id, [push(net, round_id, "twin0")])
    fn = net.registry.functions.pushUpdate(round_id, digest("late"), 1, 1, DENSE, NO_META)
    assert_reverts(net, fn, "twin1", "round closed")


def test_update_rejected_after_round_cancelled(net: TestNet) -> None:
    round_id = open_round(net, base_model(net))
    net.send(net.registry.functions.cancelRound(round_id, "no longer needed"), "publisher")
    fn = net.registry.functions.pushUpdate(round_id, digest("late"), 1, 1, DENSE, NO_META)
    assert_reverts(net, fn, "twin1", "round cancelled")


def test_round_holds_at_most_128_updates(net: TestNet) -> None:
    """A registry bound to its own Membership with 129 twins (threshold 1)."""
    twins = net.spares(129)
    membership = net.deploy_fresh("Membership")
    members = ["publisher", *twins]
    roles = [int(Role.PUBLISHER), *(int(Role.TWIN) for _ in twins)]
    fn = membership.functions.initialize(
        [net.accounts["admin0"]], 1, [net.accounts[m] for m in members], roles
    )
    net.send(fn, "admin0", gas=20_000_000)
    registry: Contract = net.deploy_fresh("ModelRegistry")
    net.send(registry.functions.initialize(membership.address), "admin0")
    r = registry.functions
    net.send(r.registerModel("m", digest("m"), 1, "onnx", [], [], NO_META), "publisher")
    net.send(r.openRound("m", 1, 1, net.block_number + 1000), "publisher")
    for i, twin in enumerate(twins[:128]):
        net.send(r.pushUpdate(1, digest(f"u{i}"), 1, 1, DENSE, NO_META), twin)
    fn = r.pushUpdate(1, digest("u128"), 1, 1, DENSE, NO_META)
    assert_reverts(net, fn, twins[128], "round full")


# ---------------------------------------------------------------- close


def test_close_round_registers_the_aggregate_as_a_child_of_the_base(net: TestNet) -> None:
    base = base_model(net)
    round_id = open_round(net, base, min_updates=2)
    updates = [push(net, round_id, t) for t in ("twin0", "twin1", "twin2")]
    included = [updates[2], updates[0]]  # a robust rule may leave some out
    fn = net.registry.functions.closeRound(round_id, "trimmed-mean", included, digest("g"), 4000)
    version_id = fn.call({"from": net.accounts["miner2"]})
    receipt = net.send(fn, "miner2")
    block = receipt["blockNumber"]
    assert net.event(receipt, net.registry, "RoundClosed") == {
        "round_id": round_id,
        "version_id": version_id,
        "closer": net.accounts["miner2"],
        "strategy": "trimmed-mean",
        "included_update_ids": included,
        "result_digest": digest("g"),
        "result_size": 4000,
        "update_count": 3,
        "block": block,
    }
    registered = net.event(receipt, net.registry, "ModelVersionRegistered")
    assert (registered["version_id"], registered["round_id"]) == (version_id, round_id)
    version = net.record(net.registry, "getVersion", version_id)
    assert version["name"] == "edge-net"
    assert version["version"] == 2
    assert version["parents"] == [base]
    assert version["format"] == "safetensors"
    assert version["round_id"] == round_id
    assert version["registrant"] == net.accounts["miner2"]
    assert (version["digest"], version["size"]) == (digest("g"), 4000)
    record = net.record(net.registry, "getRound", round_id)
    assert record["status"] == RoundStatus.CLOSED
    assert record["strategy"] == "trimmed-mean"
    assert record["included_update_ids"] == included
    assert record["update_ids"] == updates
    assert (record["result_version"], record["closer"], record["closed_block"]) == (
        version_id,
        net.accounts["miner2"],
        block,
    )
    assert net.registry.functions.latest("edge-net").call() == version_id


def test_aggregate_provenance_reaches_each_contributing_twin(net: TestNet) -> None:
    round_id = open_round(net, base_model(net), min_updates=2)
    updates = [push(net, round_id, t) for t in ("twin0", "twin1")]
    version_id = close(net, round_id, updates)
    r = net.registry.functions
    found_round = net.record(net.registry, "getVersion", version_id)["round_id"]
    included = net.record(net.registry, "getRound", found_round)["included_update_ids"]
    twins = [net.record(net.registry, "getUpdate", u)["twin"] for u in included]
    assert twins == [net.accounts["twin0"], net.accounts["twin1"]]
    assert r.versionIdByDigest(digest("aggregate")).call() == version_id


def test_round_for_a_new_model_name_starts_its_version_history(net: TestNet) -> None:
    foundation = base_model(net, name="foundation", label="f")
    fn = net.registry.functions.openRound("edge-ft", foundation, 1, net.block_number + 5)
    round_id = net.result_of(fn, "publisher")
    version_id = close(net, round_id, [push(net, round_id, "twin0")])
    version = net.record(net.registry, "getVersion", version_id)
    assert (version["name"], version["version"], version["parents"]) == (
        "edge-ft",
        1,
        [foundation],
    )


def test_round_may_close_after_deadline_with_fewer_updates(net: TestNet) -> None:
    round_id = open_round(net, base_model(net), min_updates=3, window=2)
    update = push(net, round_id, "twin0")
    fn = net.registry.functions.closeRound(round_id, "fedavg", [update], digest("g"), 1)
    assert_reverts(net, fn, "miner0", "min updates not reached before deadline")
    net.mine(2)
    close(net, round_id, [update])
    assert net.record(net.registry, "getRound", round_id)["status"] == RoundStatus.CLOSED


@pytest.mark.parametrize("sender", ["publisher", "twin0", "admin0", "outsider"])
def test_close_round_requires_miner(net: TestNet, sender: str) -> None:
    round_id = open_round(net, base_model(net), min_updates=1)
    update = push(net, round_id, "twin0")
    fn = net.registry.functions.closeRound(round_id, "fedavg", [update], digest("g"), 1)
    assert_reverts(net, fn, sender, "not a MINER")


@pytest.fixture(scope="class")
def two_rounds(session_net: TestNet) -> Iterator[TestNet]:
    """Round 1 holds updates 1 and 2 (min 2); round 2 holds update 3 (min 2)."""
    net = session_net
    with net.isolated():
        base = base_model(net)
        first = open_round(net, base, min_updates=2)
        second = open_round(net, base, min_updates=2)
        assert [push(net, first, t) for t in ("twin0", "twin1")] == [1, 2]
        assert push(net, second, "twin0") == 3
        yield net


class TestCloseRoundRejectsBadAggregates:
    """Round 1 holds updates 1 and 2 (min 2); round 2 holds update 3 (min 2)."""

    @pytest.mark.parametrize(
        ("round_id", "strategy", "included", "result", "size", "reason"),
        [
            (0, "fedavg", [1], "g", 1, "unknown round"),
            (9, "fedavg", [1], "g", 1, "unknown round"),
            (2, "fedavg", [1], "g", 1, "min updates not reached before deadline"),
            (1, "", [1], "g", 1, "empty strategy"),
            (1, "fedavg", [], "g", 1, "no updates included"),
            (1, "fedavg", [1, 3], "g", 1, "update not in round"),
            (1, "fedavg", [0], "g", 1, "update not in round"),
            (1, "fedavg", [99], "g", 1, "update not in round"),
            (1, "fedavg", [1, 2, 1], "g", 1, "duplicate update"),
            (1, "fedavg", [1], "base", 1, "digest already registered"),
            (1, "fedavg", [1], "g", 0, "zero size"),
        ],
    )
    def test_rejected(
        self,
        two_rounds: TestNet,
        round_id: int,
        strategy: str,
        included: list[int],
        result: str,
        size: int,
        reason: str,
    ) -> None:
        net = two_rounds
        fn = net.registry.functions.closeRound(round_id, strategy, included, digest(result), size)
        assert_reverts(net, fn, "miner0", reason)


def test_close_round_refused_once_the_base_is_revoked(net: TestNet) -> None:
    base = base_model(net)
    round_id = open_round(net, base, min_updates=1)
    update = push(net, round_id, "twin0")
    net.send(net.registry.functions.revokeVersion(base, "poisoned"), "admin0")
    fn = net.registry.functions.closeRound(round_id, "fedavg", [update], digest("g"), 1)
    assert_reverts(net, fn, "miner0", "base version revoked")


def test_closed_round_cannot_close_again(net: TestNet) -> None:
    round_id = open_round(net, base_model(net), min_updates=1)
    update = push(net, round_id, "twin0")
    close(net, round_id, [update])
    fn = net.registry.functions.closeRound(round_id, "fedavg", [update], digest("g2"), 1)
    assert_reverts(net, fn, "miner1", "round closed")


# ---------------------------------------------------------------- cancel


def test_cancel_round_records_who_and_why(net: TestNet) -> None:
    round_id = open_round(net, base_model(net))
    push(net, round_id, "twin0")
    receipt = net.send(net.registry.functions.cancelRound(round_id, "base poisoned"), "miner3")
    assert net.event(receipt, net.registry, "RoundCancelled") == {
        "round_id": round_id,
        "actor": net.accounts["miner3"],
        "reason": "base poisoned",
        "update_count": 1,
        "block": receipt["blockNumber"],
    }
    record = net.record(net.registry, "getRound", round_id)
    assert record["status"] == RoundStatus.CANCELLED
    assert (record["cancel_reason"], record["closer"]) == ("base poisoned", net.accounts["miner3"])
    fn = net.registry.functions.closeRound(round_id, "fedavg", [1], digest("g"), 1)
    assert_reverts(net, fn, "miner0", "round cancelled")


@pytest.fixture(scope="class")
def three_rounds(session_net: TestNet) -> Iterator[TestNet]:
    """Round 1 is open, round 2 closed, round 3 cancelled."""
    net = session_net
    with net.isolated():
        base = base_model(net)
        open_round(net, base)
        closed = open_round(net, base, min_updates=1)
        close(net, closed, [push(net, closed, "twin0")])
        cancelled = open_round(net, base)
        net.send(net.registry.functions.cancelRound(cancelled, "gone"), "publisher")
        yield net


class TestCancelRoundRejectsBadCalls:
    """Round 1 is open, round 2 closed, round 3 cancelled."""

    @pytest.mark.parametrize(
        ("sender", "round_id", "reason_arg", "reason"),
        [
            ("twin0", 1, "r", "not a PUBLISHER or MINER"),
            ("admin0", 1, "r", "not a PUBLISHER or MINER"),
            ("publisher", 0, "r", "unknown round"),
            ("publisher", 5, "r", "unknown round"),
            ("publisher", 1, "", "empty reason"),
            ("publisher", 2, "r", "round closed"),
            ("publisher", 3, "r", "round cancelled"),
        ],
    )
    def test_rejected(
        self, three_rounds: TestNet, sender: str, round_id: int, reason_arg: str, reason: str
    ) -> None:
        fn = three_rounds.registry.functions.cancelRound(round_id, reason_arg)
        assert_reverts(three_rounds, fn, sender, reason)


@pytest.mark.parametrize(("getter", "reason"), [("getRound", "round"), ("getUpdate", "update")])
def test_unknown_round_and_update_lookups_rejected(net: TestNet, getter: str, reason: str) -> None:
    for record_id in (0, 1):
        with pytest.raises(Exception, match=f"unknown {reason}"):
            getattr(net.registry.functions, getter)(record_id).call()


def test_a_mined_failed_close_changes_nothing(net: TestNet) -> None:
    """A reverted transaction that made it into a block leaves no state and no logs behind,
    including the transient duplicate marks of the included ids."""
    round_id = open_round(net, base_model(net), min_updates=1)
    update = push(net, round_id, "twin0")
    versions = net.registry.functions.versionCount().call()
    bad = net.registry.functions.closeRound(round_id, "fedavg", [update, update], digest("g"), 1)
    tx_hash = bad.transact({"from": net.accounts["miner0"], "gas": 2_000_000})
    receipt = net.w3.eth.wait_for_transaction_receipt(tx_hash)
    assert (receipt["status"], receipt["logs"]) == (0, [])
    assert net.record(net.registry, "getRound", round_id)["status"] == RoundStatus.OPEN
    assert net.registry.functions.versionCount().call() == versions
    close(net, round_id, [update])
    assert net.record(net.registry, "getRound", round_id)["status"] == RoundStatus.CLOSED
