"""A Byzantine miner equivocates in a real network; `audit equivocations` proves it.

One 4-miner PBFT network (real processes, mutual TLS, SQLite) per module. Miner 3 is
stopped and an adversary holding its stolen validator key and TLS certificate
(:mod:`tests.audit.byzantine`) connects to the three honest miners over the real
transport and signs two PREPAREs and two COMMITs with different digests for one slot
each. The honest miners record the evidence; the audit tool gathers it from their data
directories (read-only, while they run) and over JSON-RPC, and every record verifies
with the validator set alone. Tampered records do not.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from typer.testing import CliRunner

from contracts import ELECTION_ADDRESS, load_artifact
from node.chain.genesis import load_genesis
from node.consensus.evidence import EquivocationEvidence
from node.consensus.messages import Kind, SignedMessage
from node.consensus.types import Address, ValidatorSet
from registry.audit import equivocation as eq
from registry.audit.source import MinerData
from registry.cli import app
from tests.audit.byzantine import Equivocation, equivocate, private_key_of
from tests.network.harness import Network, running_network

runner = CliRunner()
HONEST = [0, 1, 2]
BYZANTINE = 3


@dataclass
class Scene:
    """The network after the adversary struck."""

    net: Network
    offences: list[Equivocation]

    @property
    def data_dirs(self) -> list[Path]:
        return [self.net.layout.miners[i].data_dir for i in HONEST]

    @property
    def chain_id(self) -> int:
        return self.net.layout.chain_id


def _evidence_count(net: Network, i: int) -> int:
    status = net.status(i)
    return -1 if status is None else int(status["evidence"])


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scene]:
    root = tmp_path_factory.mktemp("byzantine") / "net"
    with running_network(root, nodes=4) as net:
        net.stop(BYZANTINE)
        head = min(net.heights(HONEST).values())
        net.wait_height(head + 1, HONEST, timeout=90)  # the honest three go on alone
        status = net.status(0)
        assert status is not None
        height, view = int(status["height"]) + 1, int(status["round"])
        members = load_genesis(net.layout.genesis).validators
        me = bytes.fromhex(net.layout.miners[BYZANTINE].address[2:])
        # A PREPARE from a view's primary is dropped before the detector: pick a view
        # whose primary is someone else.
        prepare_view = next(v for v in range(view, view + 4) if members[v % len(members)] != me)
        offences = equivocate(
            net.layout,
            BYZANTINE,
            HONEST,
            [(Kind.COMMIT, height, view), (Kind.PREPARE, height, prepare_view)],
            until=lambda: all(_evidence_count(net, i) >= 2 for i in HONEST),
        )
        yield Scene(net, offences)


def _sent_ids(scene: Scene) -> set[str]:
    return {eq.evidence_id(o.first.signer, *o.first.slot()) for o in scene.offences}


def _gather_dirs(dirs: list[Path]) -> list[eq.EvidenceRecord]:
    raws: list[eq.RawRecord] = []
    sets: list[tuple[str, eq.ValidatorSets]] = []
    for d in dirs:
        data = MinerData.open(d)
        raws += eq.read_data_dir(data)
        store = eq.open_chain_readonly(data)
        sets.append((str(d), eq.chain_validator_sets(data.genesis, store)))
    genesis = MinerData.open(dirs[0]).genesis
    return eq.gather(raws, genesis.chain_id, genesis.consensus.epoch_length, sets)


def test_honest_miners_record_the_byzantine_miners_equivocation(scene: Scene) -> None:
    records = _gather_dirs(scene.data_dirs)
    byzantine = scene.net.layout.miners[BYZANTINE].address.lower()
    assert {r.id for r in records} == _sent_ids(scene)
    for record in records:
        assert record.validator == byzantine
        assert record.verified, record.reason
        assert sorted(record.sources) == sorted(str(d) for d in scene.data_dirs)
        sent = next(
            o
            for o in scene.offences
            if eq.evidence_id(o.first.signer, *o.first.slot()) == record.id
        )
        assert record.evidence is not None
        stored = {record.evidence.first.encode(), record.evidence.second.encode()}
        assert stored == {sent.first.encode(), sent.second.encode()}
        views = record.messages(scene.chain_id)
        assert {v.digest for v in views} == {
            "0x" + bytes(m.digest).hex() for m in (sent.first, sent.second)
        }
        assert all(v.signer == byzantine for v in views)
    assert {r.kind for r in records} == {"prepare", "commit"}


def test_evidence_verifies_with_the_validator_set_alone(scene: Scene) -> None:
    """Nothing but the genesis validator list (epoch 0/1) and the chain id are needed."""
    genesis = load_genesis(scene.net.layout.genesis)
    members = tuple(Address(a) for a in genesis.validators)
    for record in _gather_dirs(scene.data_dirs):
        evidence = EquivocationEvidence.decode(bytes.fromhex(record.encoded[2:]))
        evidence.verify(genesis.chain_id, ValidatorSet(record.epoch, members))
        others = tuple(m for m in members if m != evidence.validator)
        assert not evidence.is_valid(genesis.chain_id, ValidatorSet(record.epoch, others))
        assert not evidence.is_valid(genesis.chain_id + 1, ValidatorSet(record.epoch, members))


def test_running_miner_serves_the_same_records_over_json_rpc(scene: Scene) -> None:
    url = scene.net.url(1)
    call = eq.rpc_caller(url, token=scene.net.token(1, "auditor-0"))
    genesis = load_genesis(scene.net.layout.genesis)
    records = eq.gather(
        eq.read_rpc(call, url),
        genesis.chain_id,
        genesis.consensus.epoch_length,
        [("rpc", eq.rpc_validator_sets(call))],
    )
    assert {r.id for r in records} == _sent_ids(scene)
    assert all(r.verified and r.validator_set_source == "rpc" for r in records)


def _cli(*args: str) -> Any:
    return runner.invoke(app, ["audit", "equivocations", *args], env={"COLUMNS": "200"})


def test_cli_lists_every_record_as_verified(scene: Scene) -> None:
    dirs = [a for d in scene.data_dirs for a in ("--data-dir", str(d))]
    result = _cli(*dirs, "--json")
    assert result.exit_code == 0, (result.stdout, result.stderr)
    listed = json.loads(result.stdout)
    assert {r["id"] for r in listed} == _sent_ids(scene)
    for r in listed:
        assert r["verified"] is True and r["reason"] is None
        assert r["position"] == f"view {r['round']}"
        assert len(r["messages"]) == 2 and len(r["sources"]) == 3
        first, second = r["messages"]
        assert (first["height"], first["round"], first["kind"]) == (
            second["height"],
            second["round"],
            second["kind"],
        )
        assert first["digest"] != second["digest"]
    table = _cli(*dirs)
    assert table.exit_code == 0, table.stderr
    assert all(i in table.stdout for i in _sent_ids(scene)) and "verified" in table.stdout


def test_cli_reads_a_running_miner_with_a_member_key(scene: Scene) -> None:
    auditor = next(a for a in scene.net.layout.accounts if a.name == "auditor-0")
    result = _cli(
        "--url",
        scene.net.url(2),
        "--keystore",
        str(auditor.keystore),
        "--password-file",
        str(auditor.password_file),
        "--genesis",
        str(scene.net.layout.genesis),
        "--json",
    )
    assert result.exit_code == 0, (result.stdout, result.stderr)
    assert {r["id"] for r in json.loads(result.stdout)} == _sent_ids(scene)


def _copy_db(src: Path, dest: Path) -> None:
    """A consistent copy of a live miner's SQLite database (the backup API)."""
    with sqlite3.connect(f"file:{src}?mode=ro", uri=True) as a, sqlite3.connect(dest) as b:
        a.backup(b)


def _tampered_dir(scene: Scene, tmp_path: Path, tamper: Any) -> Path:
    source = scene.data_dirs[0]
    dest = tmp_path / "data"
    dest.mkdir()
    _copy_db(source / "chain.db", dest / "chain.db")
    _copy_db(source / "consensus.db", dest / "consensus.db")
    with sqlite3.connect(dest / "consensus.db") as conn:
        rows = conn.execute("SELECT key, encoded FROM evidence WHERE kind = ?", (Kind.COMMIT,))
        key, encoded = rows.fetchone()
        conn.execute("UPDATE evidence SET encoded = ? WHERE key = ?", (tamper(bytes(encoded)), key))
    return dest


def _flip_signature_byte(encoded: bytes) -> bytes:
    ev = EquivocationEvidence.decode(encoded)
    sig = bytearray(ev.second.signature)
    sig[5] ^= 0x01
    second = SignedMessage(**{**vars(ev.second), "signature": bytes(sig)})
    return EquivocationEvidence(ev.first, second).encode()


def _move_to_another_height(encoded: bytes) -> bytes:
    ev = EquivocationEvidence.decode(encoded)
    first = SignedMessage(**{**vars(ev.first), "height": ev.first.height + 1})
    second = SignedMessage(**{**vars(ev.second), "height": ev.second.height + 1})
    return EquivocationEvidence(first, second).encode()


def _same_digest(encoded: bytes) -> bytes:
    ev = EquivocationEvidence.decode(encoded)
    second = SignedMessage(**{**vars(ev.second), "digest": ev.first.digest})
    return EquivocationEvidence(ev.first, second).encode()


def _truncate(encoded: bytes) -> bytes:
    return encoded[:-7]


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [
        (_flip_signature_byte, "signature invalid"),
        (_move_to_another_height, "first signature invalid"),
        (_same_digest, "messages agree on the digest"),
        (_truncate, "does not decode"),
    ],
    ids=["signature-byte", "height", "digest", "truncated"],
)
def test_a_tampered_record_does_not_verify(
    scene: Scene, tmp_path: Path, tamper: Any, reason: str
) -> None:
    tampered = _tampered_dir(scene, tmp_path, tamper)
    result = _cli("--data-dir", str(tampered), "--genesis", str(scene.net.layout.genesis), "--json")
    assert result.exit_code == 1, (result.stdout, result.stderr)
    assert "do not verify" in result.stderr
    listed = {r["kind"]: r for r in json.loads(result.stdout)}
    assert listed["prepare"]["verified"] is True
    assert listed["commit"]["verified"] is False
    assert reason in listed["commit"]["reason"]


def test_a_record_whose_stored_columns_disagree_with_its_messages_does_not_verify(
    scene: Scene, tmp_path: Path
) -> None:
    tampered = _tampered_dir(scene, tmp_path, lambda encoded: encoded)
    with sqlite3.connect(tampered / "consensus.db") as conn:
        conn.execute("UPDATE evidence SET height = height + 5 WHERE kind = ?", (Kind.COMMIT,))
    result = _cli("--data-dir", str(tampered), "--genesis", str(scene.net.layout.genesis), "--json")
    assert result.exit_code == 1, (result.stdout, result.stderr)
    listed = {r["kind"]: r for r in json.loads(result.stdout)}
    assert listed["commit"]["verified"] is False
    assert "disagree with the signed messages" in listed["commit"]["reason"]


def test_bad_command_lines_exit_2_with_the_reason(scene: Scene, tmp_path: Path) -> None:
    cases = [
        ([], "give at least one --data-dir or --url"),
        (["--data-dir", str(tmp_path / "nowhere")], "no such directory"),
        (["--data-dir", str(tmp_path)], "no chain.db here"),
        (["--url", scene.net.url(0)], "needs --token or --keystore"),
        (
            ["--data-dir", str(scene.data_dirs[0]), "--validator", "0x12"],
            "--validator must be 0x + 40 hex digits",
        ),
    ]
    for args, message in cases:
        result = _cli(*args)
        assert result.exit_code == 2, (args, result.stdout, result.stderr)
        assert message in result.stderr, (args, result.stderr)


def test_jail_refuses_unknown_ids_and_submits_nothing(scene: Scene) -> None:
    auditor = next(a for a in scene.net.layout.accounts if a.name == "auditor-0")
    result = runner.invoke(
        app,
        [
            "audit",
            "jail",
            "ffffffffffff",
            "--url",
            scene.net.url(0),
            "--keystore",
            str(auditor.keystore),
            "--password-file",
            str(auditor.password_file),
            "--data-dir",
            str(scene.data_dirs[0]),
        ],
    )
    assert result.exit_code == 1, (result.stdout, result.stderr)
    assert "no evidence record 'ffffffffffff'" in result.stderr


# ---------------------------------------------------------------- DPoS: evidence → jail


@pytest.fixture(scope="module")
def dpos(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Network]:
    root = tmp_path_factory.mktemp("dpos") / "net"
    with running_network(root, nodes=4, engine="dpos") as net:
        yield net


def _election(w3: Any) -> Any:
    return w3.eth.contract(
        address=w3.to_checksum_address(ELECTION_ADDRESS), abi=load_artifact("Election").abi
    )


def test_dpos_equivocation_jails_the_delegate_through_the_election_contract(
    dpos: Network,
) -> None:
    net = dpos
    w3 = net.web3(0)
    election = _election(w3)
    delegate = Account.from_key(private_key_of(net.layout, BYZANTINE))
    tx = election.functions.registerCandidate().build_transaction(
        {
            "from": delegate.address,
            "nonce": w3.eth.get_transaction_count(delegate.address),
            "gas": 500_000,
            "maxFeePerGas": 0,
            "maxPriorityFeePerGas": 0,
            "chainId": net.layout.chain_id,
        }
    )
    sent = w3.eth.send_raw_transaction(delegate.sign_transaction(tx).raw_transaction)
    receipt = w3.eth.wait_for_transaction_receipt(sent, timeout=60, poll_latency=0.2)
    assert receipt["status"] == 1
    assert election.functions.isCandidate(delegate.address).call() is True

    net.stop(BYZANTINE)

    def next_height() -> list[tuple[Kind, int, int]]:  # read once the adversary is connected
        status = net.status(0)
        assert status is not None
        return [(Kind.CONFIRM, int(status["height"]) + 1, 1)]  # round 1: confirm of round 0

    equivocate(
        net.layout,
        BYZANTINE,
        HONEST,
        next_height,
        until=lambda: all(_evidence_count(net, i) >= 1 for i in HONEST),
    )
    data_dir = str(net.layout.miners[0].data_dir)
    listed = _cli("--data-dir", data_dir, "--json")
    assert listed.exit_code == 0, (listed.stdout, listed.stderr)
    (record,) = json.loads(listed.stdout)
    assert (record["engine"], record["kind"], record["verified"]) == ("dpos", "confirm", True)
    assert record["position"] == "round 0 confirm"

    auditor = next(a for a in net.layout.accounts if a.name == "auditor-0")
    jail = [
        "audit",
        "jail",
        record["id"][:8],
        "--url",
        net.url(1),
        "--keystore",
        str(auditor.keystore),
        "--password-file",
        str(auditor.password_file),
        "--data-dir",
        data_dir,
        "--json",
    ]
    result = runner.invoke(app, jail)
    assert result.exit_code == 0, (result.stdout, result.stderr)
    outcome = json.loads(result.stdout)
    assert outcome["status"] == "committed" and outcome["jailed"] is True
    assert election.functions.isJailed(delegate.address).call() is True
    assert delegate.address not in election.functions.committee().call()
    again = runner.invoke(app, jail)
    assert again.exit_code == 1 and "already jailed" in again.stderr
