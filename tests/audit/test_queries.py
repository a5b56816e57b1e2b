"""Audit queries return exactly what happened on a real network (tests/audit/history.py).

The index is built from a miner's data directory while the miner runs (read-only SQLite),
from a different miner than the one the transactions were sent to.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from eth_abi.abi import encode as abi_encode
from eth_account import Account
from eth_hash.auto import keccak
from typer.testing import CliRunner

from contracts import ELECTION_ADDRESS, MEMBERSHIP_ADDRESS, ProposalAction, Role
from node.chain.genesis import build_genesis, load_genesis
from node.chain.types import Address as NodeAddress
from node.consensus.messages import Signer
from node.errors import InvalidInput, NotFound
from node.rpc.local import LocalNodeView
from registry.audit.index import AuditIndex, IndexInconsistent
from registry.audit.queries import AuditQueries, Filters
from registry.cli import app
from tests.audit.conftest import AuditHistory
from tests.audit.history import DATASET, MODEL, Expected, Tx

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def queries(
    audit_history: AuditHistory, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AuditQueries]:
    """Queries over miner 1's chain, indexed up to the current head."""
    e = audit_history.expected
    index = AuditIndex.open(
        e.data_dirs[1], e.genesis, tmp_path_factory.mktemp("index") / "index.db"
    )
    index.update()
    yield AuditQueries(index)
    index.close()


def _timestamps(audit_history: AuditHistory, heights: set[int]) -> dict[int, tuple[int, str]]:
    w3 = audit_history.net.web3(1)
    found = {}
    for h in heights:
        block = w3.eth.get_block(h)
        found[h] = (int(block["timestamp"]), "0x" + bytes(block["hash"]).hex())
    return found


def _expected_history(e: Expected) -> list[tuple[str, Tx, dict[str, Any]]]:
    items: list[tuple[int, str, Tx, dict[str, Any]]] = []
    for number, (vid, tx, parents, datasets, round_id) in e.versions.items():
        args = {
            "version_id": vid,
            "version": number,
            "parents": list(parents),
            "datasets": list(datasets),
            "round_id": round_id,
        }
        items.append((0, "ModelVersionRegistered", tx, args))
    assert e.deprecated is not None and e.revoked is not None
    vid, reason, tx = e.deprecated
    items.append((1, "VersionDeprecated", tx, {"version_id": vid, "reason": reason}))
    vid, reason, tx = e.revoked
    items.append((1, "VersionRevoked", tx, {"version_id": vid, "reason": reason}))
    for alias, target, previous, tx in e.alias_moves:
        args = {"alias": alias, "version_id": target, "previous_version_id": previous}
        items.append((2, "AliasMoved", tx, args))
    items.sort(key=lambda i: (i[2].block, i[0]))
    return [(name, tx, args) for _, name, tx, args in items]


def test_history_lists_every_registration_alias_move_deprecation_and_revocation(
    audit_history: AuditHistory, queries: AuditQueries
) -> None:
    e = audit_history.expected
    history = queries.history(MODEL)
    wanted = _expected_history(e)
    assert [ev.name for ev in history.events] == [name for name, _, _ in wanted]
    chain = _timestamps(audit_history, {tx.block for _, tx, _ in wanted})
    for ev, (_, tx, args) in zip(history.events, wanted, strict=True):
        assert (ev.tx_hash, ev.block, ev.block_hash, ev.sender) == (
            tx.tx_hash,
            tx.block,
            tx.block_hash,
            tx.sender,
        )
        assert ev.actor == tx.sender  # who: the event's actor is the signer here
        assert (ev.timestamp, ev.block_hash) == chain[tx.block]  # when: the block's time
        assert {k: ev.args[k] for k in args} == args
    assert history.to_json()["events"][0]["name"] == "ModelVersionRegistered"


def test_lineage_reaches_parents_aggregates_updates_twins_and_datasets(
    audit_history: AuditHistory, queries: AuditQueries
) -> None:
    e = audit_history.expected
    v = {number: entry[0] for number, entry in e.versions.items()}
    lineage = queries.lineage(MODEL, "latest")  # v5 is revoked: latest is v4
    assert lineage.version_id == v[4]
    assert [n.id for n in lineage.versions] == [v[4], v[3], v[2], v[1]]
    assert lineage.edges == ((v[4], v[3]), (v[3], v[2]), (v[2], v[1]))
    assert [r.id for r in lineage.rounds] == [1, 2]
    for r in lineage.rounds:
        rec = e.rounds[r.id]
        assert (r.base_version, r.result_version, r.strategy) == (
            rec["base"],
            rec["result"],
            rec["strategy"],
        )
        assert list(r.included_update_ids) == rec["included"]
        assert r.close_tx == rec["close"].tx_hash
    pushed = [u for rid in (1, 2) for u in e.rounds[rid]["updates"]]
    assert [(u.id, u.twin, u.samples, u.digest) for u in lineage.updates] == [
        (u[0], u[1], u[2], u[3]) for u in pushed
    ]
    assert [u.kind for u in lineage.updates] == ["dense", "sparse", "dense", "dense"]
    assert set(lineage.twins) == {e.accounts[t] for t in ("twin-0", "twin-1", "twin-2")}
    assert [d.id for d in lineage.datasets] == [e.dataset_id]
    assert lineage.datasets[0].name == DATASET
    assert e.dataset_tx is not None and lineage.datasets[0].tx_hash == e.dataset_tx.tx_hash
    statuses = {n.id: n.status for n in lineage.versions}
    assert statuses[v[1]] == "deprecated" and statuses[v[4]] == "active"
    assert {n.id: n.datasets for n in lineage.versions}[v[1]] == (e.dataset_id,)

    production = queries.lineage(MODEL, "production")  # moved v1 -> v2
    assert production.version_id == v[2]
    assert [n.id for n in production.versions] == [v[2], v[1]] and production.rounds == ()
    revoked = queries.lineage(MODEL, "5")  # an explicit number may name a revoked version
    assert revoked.versions[0].status == "revoked" and revoked.versions[0].id == v[5]
    assert revoked.versions[0].status_reason == "poisoned"


def test_lineage_refs_that_do_not_resolve_are_not_found(queries: AuditQueries) -> None:
    with pytest.raises(NotFound, match="has no alias 'staging'"):
        queries.lineage(MODEL, "staging")  # cleared when v5 was revoked
    with pytest.raises(NotFound, match="unknown model 'nope'"):
        queries.lineage("nope", "latest")
    with pytest.raises(NotFound, match="has no version 99"):
        queries.lineage(MODEL, "99")
    with pytest.raises(InvalidInput, match="alias must be 1 to 32 bytes"):
        queries.lineage(MODEL, "x" * 33)


def test_actor_lists_everything_an_account_did_in_order(
    audit_history: AuditHistory, queries: AuditQueries
) -> None:
    e = audit_history.expected
    publisher = e.accounts["publisher-0"]
    report = queries.actor(publisher.upper().replace("0X", "0x"))
    assert report.address == publisher and report.roles_at_genesis == ("PUBLISHER",)
    sent = [t.tx_hash for t in e.all_txs() if t.sender == publisher]
    seen = [ev.tx_hash for ev in report.events if ev.tx_hash is not None]
    assert list(dict.fromkeys(seen)) == sent  # every transaction it signed, in chain order
    assert [ev.seq for ev in report.events] == sorted(ev.seq for ev in report.events)

    twin = queries.actor(e.accounts["twin-1"])
    pushes = [ev for ev in twin.events if ev.name == "UpdatePushed"]
    assert [ev.args["update_id"] for ev in pushes] == [2, 3]
    assert twin.roles_at_genesis == ("TWIN",)

    removed = queries.actor(e.removed_miner)
    assert "MINER" in removed.roles_at_genesis
    assert e.approval_tx is not None and e.proposal_tx is not None
    about = {
        (ev.name, ev.tx_hash): rel
        for ev, rel in zip(removed.events, removed.relations, strict=True)
    }
    assert about[("RoleRevoked", e.approval_tx.tx_hash)] == ("subject",)
    assert about[("ProposalCreated", e.proposal_tx.tx_hash)] == ("subject",)

    approver = queries.actor(e.accounts["admin-1"])
    names = [(ev.name, rel) for ev, rel in zip(approver.events, approver.relations, strict=True)]
    assert ("ProposalApproved", ("actor", "sender")) in names
    assert ("RoleRevoked", ("actor", "sender")) in names

    with pytest.raises(NotFound, match="no recorded activity"):
        queries.actor("0x" + "ab" * 20)
    with pytest.raises(InvalidInput, match="not an address"):
        queries.actor("0x1234")


def test_round_shows_opening_every_update_and_the_close_or_cancel(
    audit_history: AuditHistory, queries: AuditQueries
) -> None:
    e = audit_history.expected
    for rid in (1, 2):
        rec = e.rounds[rid]
        report = queries.round(rid)
        r = report.round
        assert (r.status, r.base_version, r.strategy, r.result_version) == (
            "closed",
            rec["base"],
            rec["strategy"],
            rec["result"],
        )
        assert (r.open_tx, r.open_block, r.opener) == (
            rec["open"].tx_hash,
            rec["open"].block,
            rec["open"].sender,
        )
        assert (r.close_tx, r.close_block, r.closer) == (
            rec["close"].tx_hash,
            rec["close"].block,
            e.accounts["node-0"],
        )
        assert [
            (u.id, u.twin, u.samples, u.digest, u.tx_hash, u.included) for u in report.updates
        ] == [(u[0], u[1], u[2], u[3], u[5].tx_hash, True) for u in rec["updates"]]
        assert [ev.name for ev in report.events] == [
            "RoundOpened",
            "UpdatePushed",
            "UpdatePushed",
            "ModelVersionRegistered",
            "RoundClosed",
        ]
    cancelled = queries.round(3)
    assert cancelled.round.status == "cancelled"
    assert cancelled.round.cancel_reason == "nobody showed up"
    assert cancelled.round.close_tx == e.rounds[3]["cancel"].tx_hash
    assert cancelled.updates == () and cancelled.round.result_version is None
    with pytest.raises(NotFound, match="unknown round 99"):
        queries.round(99)


def test_validators_follow_the_admin_proposal_at_the_epoch_the_rule_says(
    audit_history: AuditHistory, queries: AuditQueries
) -> None:
    e = audit_history.expected
    epochs = queries.validators()
    assert [x.epoch for x in epochs[: e.change_epoch + 1]] == list(range(e.change_epoch + 1))
    for x in epochs[: e.change_epoch]:
        assert list(x.members) == e.genesis_validators and x.removed == ()
    changed = queries.validators(e.change_epoch)[0]
    assert list(changed.members) == [v for v in e.genesis_validators if v != e.removed_miner]
    assert changed.removed == (e.removed_miner,) and changed.added == ()
    assert changed.boundary_height == (e.change_epoch - 1) * e.epoch_length
    assert changed.source == f"Membership.minersList() at block {changed.boundary_height}"
    assert changed.header_set_hash == changed.set_hash  # what the epoch's blocks carry
    assert e.approval_tx is not None and e.proposal_tx is not None
    why = {(ev.name, ev.tx_hash) for ev in changed.changes}
    assert ("RoleRevoked", e.approval_tx.tx_hash) in why
    assert ("ProposalCreated", e.proposal_tx.tx_hash) in why
    assert all(ev.args.get("proposal_id") == e.proposal_id for ev in changed.changes)
    assert epochs[0].source == "genesis" and epochs[0].header_set_hash == epochs[0].set_hash
    with pytest.raises(NotFound, match="not determined yet"):
        queries.validators(10**9)


def test_filters_narrow_by_block_and_time_range(
    audit_history: AuditHistory, queries: AuditQueries
) -> None:
    e = audit_history.expected
    assert e.deprecated is not None
    dep_tx = e.deprecated[2]
    only = queries.history(MODEL, Filters.parse(from_block=dep_tx.block, to_block=dep_tx.block))
    assert [ev.tx_hash for ev in only.events] == [dep_tx.tx_hash]
    stamp = only.events[0].timestamp
    iso = datetime.fromtimestamp(stamp, UTC)
    by_time = queries.history(MODEL, Filters.parse(since=iso.isoformat(), until=str(stamp)))
    assert dep_tx.tx_hash in [ev.tx_hash for ev in by_time.events]
    assert all(ev.timestamp == stamp for ev in by_time.events)
    round_window = queries.round(1, Filters.parse(to_block=e.rounds[1]["open"].block))
    assert [ev.name for ev in round_window.events] == ["RoundOpened"]
    actor = queries.actor(e.accounts["publisher-0"], Filters.parse(from_block=10**9))
    assert actor.events == ()
    with pytest.raises(InvalidInput, match="neither unix seconds nor an ISO-8601"):
        Filters.parse(since="yesterday")
    with pytest.raises(InvalidInput, match="is after"):
        Filters.parse(from_block=5, to_block=4)


def _snapshot(q: AuditQueries) -> str:
    parts = [
        q.history(MODEL).to_json(),
        q.lineage(MODEL, "latest").to_json(),
        q.lineage(MODEL, "5").to_json(),
        [q.round(r).to_json() for r in (1, 2, 3)],
        [v.to_json() for v in q.validators()],
        q.index.query("SELECT * FROM events ORDER BY seq"),
        q.index.query("SELECT * FROM event_accounts ORDER BY address, seq, relation"),
    ]
    return json.dumps(parts, sort_keys=True)


def test_rebuild_and_incremental_indexing_give_identical_results(
    audit_history: AuditHistory, queries: AuditQueries, tmp_path: Path
) -> None:
    e = audit_history.expected
    height = queries.index.indexed_height
    step = AuditIndex.open(e.data_dirs[2], e.genesis, tmp_path / "step.db")
    done = 0
    for stop in range(3, height + 1, 7):  # small increments across epoch boundaries
        done += step.update(to_height=stop)
    done += step.update(to_height=height)
    assert done == height == step.indexed_height
    reference = _snapshot(queries)
    assert _snapshot(AuditQueries(step)) == reference
    assert step.rebuild(to_height=height) == height  # from genesis
    assert _snapshot(AuditQueries(step)) == reference
    again = AuditIndex.open(e.data_dirs[0], e.genesis, tmp_path / "again.db")
    assert again.rebuild() >= height  # another miner's store, to its head
    again.rebuild(to_height=height)
    assert _snapshot(AuditQueries(again)) == reference
    step.close()
    again.close()


def test_index_refuses_a_store_that_no_longer_holds_its_blocks(
    audit_history: AuditHistory, tmp_path: Path
) -> None:
    e = audit_history.expected
    copy = tmp_path / "data"
    copy.mkdir()
    source = sqlite3.connect(f"file:{e.data_dirs[3] / 'chain.db'}?mode=ro", uri=True)
    target = sqlite3.connect(copy / "chain.db")
    source.backup(target)
    source.close()
    index = AuditIndex.open(copy, e.genesis, tmp_path / "index.db")
    index.update()
    height = index.indexed_height
    index.update()  # nothing new: fine
    target.execute("UPDATE blocks SET hash = ? WHERE height = ?", (b"\x01" * 32, height))
    target.commit()
    with pytest.raises(IndexInconsistent, match=f"block {height}: the index recorded"):
        index.update()
    target.execute("DELETE FROM blocks WHERE height >= ?", (height,))
    target.commit()
    with pytest.raises(IndexInconsistent, match="store replaced or truncated"):
        index.update()
    index.close()
    target.close()


def test_cli_prints_json_and_tables_with_meaningful_exit_codes(
    audit_history: AuditHistory, tmp_path: Path
) -> None:
    e = audit_history.expected
    data = ["--data-dir", str(e.data_dirs[0]), "--genesis", str(e.genesis)]
    data += ["--index", str(tmp_path / "cli.db")]
    runner = CliRunner()

    def run(*args: str) -> Any:
        return runner.invoke(app, ["audit", *args, *data])

    built = run("index", "--rebuild", "--json")
    assert built.exit_code == 0, built.output
    assert json.loads(built.stdout)["rebuilt"] is True
    result = run("history", MODEL, "--json")
    assert result.exit_code == 0, result.output
    wanted = [tx.tx_hash for _, tx, _ in _expected_history(e)]
    assert [ev["tx_hash"] for ev in json.loads(result.stdout)["events"]] == wanted
    table = run("lineage", f"{MODEL}@production")
    assert table.exit_code == 0 and "lineage of link@production" in table.stdout
    picture = tmp_path / "lineage.svg"
    svg = run("lineage", f"{MODEL}@latest", "--format", "svg", "-o", str(picture))
    assert svg.exit_code == 0 and picture.read_text().startswith("<?xml")
    dot = run("round", "1", "--format", "dot")
    assert dot.exit_code == 0 and dot.stdout.startswith("digraph")
    assert run("validators", "--epoch", str(e.change_epoch)).exit_code == 0
    assert run("actor", e.accounts["twin-0"]).exit_code == 0
    assert run("round", "99").exit_code == 1
    assert run("lineage", f"{MODEL}@staging").exit_code == 1
    assert run("actor", "not-an-address").exit_code == 2
    assert run("history", MODEL, "--since", "soon").exit_code == 2
    assert run("lineage", f"{MODEL}@latest", "--format", "png").exit_code == 2
    config = runner.invoke(
        app,
        [
            "audit",
            "round",
            "3",
            "--json",
            "--config",
            str(audit_history.net.layout.miners[1].config),
        ],
    )
    assert config.exit_code == 0, config.output
    assert json.loads(config.stdout)["round"]["status"] == "cancelled"
    missing = runner.invoke(app, ["audit", "history", MODEL, "--data-dir", str(tmp_path)])
    assert missing.exit_code == 2 and "no chain.db" in missing.output


# ---------------------------------------------------------------- DPoS committees


def _key(label: str) -> bytes:
    return bytes(keccak(b"twinchain audit dpos key " + label.encode()))


def test_dpos_committee_is_read_from_election_state_with_the_votes_behind_it(
    tmp_path: Path,
) -> None:
    """A single-node DPoS chain (real store, executor and seals): a second MINER wins
    the one committee seat by votes; the index reads Election.committee() at the
    boundary and lists the stakes, votes and candidacies behind it."""
    miner, admin, other, voter = (_key(n) for n in ("miner", "admin", "other", "voter"))
    addr = {k: Account.from_key(k).address for k in (miner, admin, other, voter)}
    doc: dict[str, Any] = {
        "chain_id": 7399,
        "timestamp": 1_767_225_600,
        "consensus": {"engine": "dpos", "epoch_length": 4, "committee_size": 1},
        "validators": [addr[miner]],
        "admins": [addr[admin]],
        "admin_threshold": 1,
        "roles": {addr[voter]: ["TWIN"], addr[other]: ["AUDITOR"]},
        "balances": {a: str(10**24) for a in addr.values()},
    }
    (tmp_path / "genesis.json").write_text(json.dumps(doc))
    genesis = load_genesis(tmp_path / "genesis.json")
    data = tmp_path / "data"
    data.mkdir()
    node = LocalNodeView.open(
        data / "chain.db", build_genesis(genesis), Signer(miner), automine=True
    )

    def send(
        key: bytes, to: str, signature: str, types: list[str], args: list[Any], value: int = 0
    ) -> str:
        sender = Account.from_key(key)
        tx = {
            "to": to,
            "data": keccak(signature.encode())[:4] + abi_encode(types, args),
            "gas": 3_000_000,
            "maxFeePerGas": 0,
            "maxPriorityFeePerGas": 0,
            "nonce": node.next_nonce(NodeAddress(bytes.fromhex(sender.address[2:]))),
            "chainId": 7399,
            "type": 2,
            "value": value,
        }
        tx_hash = node.submit_transaction(bytes(sender.sign_transaction(tx).raw_transaction))
        record = node.receipt(tx_hash)
        assert record is not None and record.receipt.status == 1, signature
        return "0x" + bytes(tx_hash).hex()

    try:
        while node.head().height < 5:  # epochs 0-1: genesis; the boundary 4 sees no candidate
            node.produce_block()
        grant = send(
            admin,
            MEMBERSHIP_ADDRESS,
            "propose(uint256,address,uint256)",
            ["uint256", "address", "uint256"],
            [int(ProposalAction.GRANT_ROLE), addr[other], int(Role.MINER)],
        )
        send(miner, ELECTION_ADDRESS, "registerCandidate()", [], [])
        send(other, ELECTION_ADDRESS, "registerCandidate()", [], [])
        send(miner, ELECTION_ADDRESS, "stake()", [], [], value=10)
        send(miner, ELECTION_ADDRESS, "vote(address[])", ["address[]"], [[addr[miner]]])
        send(voter, ELECTION_ADDRESS, "stake()", [], [], value=100)
        vote = send(voter, ELECTION_ADDRESS, "vote(address[])", ["address[]"], [[addr[other]]])
        decided = node.head().height
        while node.head().height < decided + 8:
            node.produce_block()
    finally:
        node.close()

    index = AuditIndex.open(data, tmp_path / "genesis.json", tmp_path / "index.db")
    index.update()
    epochs = AuditQueries(index).validators()
    assert epochs[2].source == "unchanged: empty answer at block 4 keeps epoch 1's"
    assert list(epochs[2].members) == [addr[miner].lower()]
    boundary = -(-decided // 4) * 4  # first boundary at or after the deciding vote
    final = epochs[boundary // 4 + 1]
    assert final.source == f"Election.committee() at block {boundary}"
    assert list(final.members) == [addr[other].lower()]
    first = next(e for e in epochs if e.members == (addr[other].lower(),))
    assert first.source.startswith("Election.committee() at block")
    assert first.removed == (addr[miner].lower(),) and first.added == (addr[other].lower(),)
    seen = {ev.tx_hash for e in epochs for ev in e.changes}
    assert vote in seen and grant in seen
    names = {ev.name for e in epochs for ev in e.changes}
    assert {"CandidateRegistered", "Staked", "Voted", "RoleGranted"} <= names
    # the local node keeps sealing with its own one-member set: the index shows the
    # mismatch between what the state elected and what the blocks carry
    assert final.header_set_hash is not None and final.header_set_hash != final.set_hash
    index.close()
