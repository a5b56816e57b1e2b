"""The twin_ namespace: sign-in, certificates that verify offline, validator sets,
evidence, consensus status and roles; plus request limits and WebSocket newHeads."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from eth_hash.auto import keccak
from websockets.sync.client import connect

from node.auth import AuthService
from node.chain.block import Header
from node.consensus.certificate import CommitCertificate
from node.consensus.evidence import EquivocationEvidence
from node.consensus.messages import EngineId, Kind, Signer
from node.consensus.types import Address, ValidatorSet
from node.rpc.local import LocalNodeView
from node.rpc.server import Dispatcher, RpcLimits
from tests.rpc.conftest import (
    ADMIN,
    AUDITOR,
    CHAIN_ID,
    PUBLISHER,
    VALIDATOR,
    LiveServer,
    register_dataset,
    rpc,
)


def result(url: str, method: str, params: list[Any], token: str) -> Any:
    reply = rpc(url, method, params, token)
    assert "result" in reply, reply
    return reply["result"]


def test_sign_in_returns_a_token_with_the_members_roles(server: LiveServer) -> None:
    from eth_account import Account
    from eth_account.messages import encode_defunct

    challenge = result(server.url, "twin_authChallenge", [ADMIN.address], "")
    assert f"Chain ID: {CHAIN_ID}" in challenge["message"]
    assert int(challenge["expiresIn"], 16) > 0
    signature = Account.sign_message(encode_defunct(text=challenge["message"]), ADMIN.private)
    issued = result(
        server.url, "twin_authToken", [ADMIN.address, "0x" + signature.signature.hex()], ""
    )
    assert issued["names"] == ["ADMIN"]
    assert int(issued["expiresAt"], 16) > time.time()
    assert "result" in rpc(server.url, "eth_blockNumber", [], issued["token"])


def test_commit_certificate_verifies_offline(
    server: LiveServer, token: str, node: LocalNodeView
) -> None:
    block = node.produce_block()
    by_number = result(server.url, "twin_getCommitCertificate", [hex(block.height)], token)
    by_hash = result(server.url, "twin_getCommitCertificate", ["0x" + block.hash().hex()], token)
    assert by_number == by_hash
    # What an offline verifier does: header RLP -> block hash; certificate over that hash
    # by a quorum of the epoch's validator set (fetched separately).
    header = Header.decode(bytes.fromhex(by_number["header"][2:]))
    assert "0x" + keccak(header.encode()).hex() == by_number["blockHash"]
    certificate = CommitCertificate.decode(bytes.fromhex(by_number["seal"][2:]))
    assert certificate.block_hash == header.hash()
    members = result(server.url, "twin_getValidatorSet", [hex(header.epoch)], token)["members"]
    validators = ValidatorSet(header.epoch, tuple(Address(bytes.fromhex(m[2:])) for m in members))
    assert validators.hash() == header.validator_set_hash
    certificate.verify(CHAIN_ID, validators)
    assert by_number["certificate"]["signatures"][0]["signer"] == VALIDATOR.address.lower()
    genesis = result(server.url, "twin_getCommitCertificate", ["earliest"], token)
    assert genesis["certificate"] is None
    assert rpc(server.url, "twin_getCommitCertificate", ["0x" + "ab" * 32], token)["result"] is None


def test_validator_set_of_current_and_future_epochs(server: LiveServer, token: str) -> None:
    current = result(server.url, "twin_getValidatorSet", [], token)
    assert current["members"] == [VALIDATOR.address.lower()]
    assert current["quorum"] == "0x1" and current["faultTolerance"] == "0x0"
    assert rpc(server.url, "twin_getValidatorSet", ["0xffff"], token)["result"] is None


def test_evidence_lists_equivocation_and_filters_by_validator(
    server: LiveServer, token: str, node: LocalNodeView
) -> None:
    signer = Signer(VALIDATOR.private)
    first = signer.sign(CHAIN_ID, EngineId.PBFT, Kind.COMMIT, 7, 0, b"\x01" * 32)
    second = signer.sign(CHAIN_ID, EngineId.PBFT, Kind.COMMIT, 7, 0, b"\x02" * 32)
    evidence = EquivocationEvidence(first, second)
    node.record_evidence(evidence)
    records = result(server.url, "twin_getEvidence", [], token)
    assert any(r["encoded"] == "0x" + evidence.encode().hex() for r in records)
    mine = result(server.url, "twin_getEvidence", [VALIDATOR.address], token)
    assert mine and all(r["validator"] == VALIDATOR.address.lower() for r in mine)
    assert result(server.url, "twin_getEvidence", [ADMIN.address], token) == []
    status = result(server.url, "twin_consensusStatus", [], token)
    assert int(status["evidence"], 16) >= 1


def test_consensus_status_tracks_the_head(
    server: LiveServer, token: str, node: LocalNodeView
) -> None:
    node.produce_block()
    status = result(server.url, "twin_consensusStatus", [], token)
    head = int(result(server.url, "eth_blockNumber", [], token), 16)
    assert status["engine"] == "pbft"
    assert int(status["committedHeight"], 16) == head
    assert int(status["height"], 16) == head + 1
    assert status["finalityLag"] == "0x0"
    assert status["proposer"] == VALIDATOR.address.lower()


def test_roles_of_reads_membership(server: LiveServer, token: str) -> None:
    publisher = result(server.url, "twin_rolesOf", [PUBLISHER.address], token)
    assert publisher["names"] == ["TWIN", "PUBLISHER"]
    assert (
        result(server.url, "twin_rolesOf", [AUDITOR.address, "earliest"], token)["roles"] == "0x10"
    )
    assert result(server.url, "twin_rolesOf", ["0x" + "00" * 20], token)["names"] == []


def dispatch(dispatcher: Dispatcher, token: str, method: str, params: list[Any]) -> Any:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
    _, reply = dispatcher.handle(body.encode(), f"Bearer {token}")
    assert reply is not None
    return json.loads(reply)


def test_log_queries_and_fee_history_are_bounded(
    node: LocalNodeView, auth: AuthService, token: str
) -> None:
    register_dataset(node, PUBLISHER, "bounded logs")
    node.produce_block()
    head = node.head().height
    limits = RpcLimits(max_log_blocks=2, max_logs=0, max_fee_history_blocks=2)
    dispatcher = Dispatcher(node, auth, limits)
    wide = dispatch(dispatcher, token, "eth_getLogs", [{"fromBlock": "0x0", "toBlock": "latest"}])
    assert wide["error"]["code"] == -32005
    assert "block range" in wide["error"]["message"]
    recent = {"fromBlock": hex(head - 1), "toBlock": hex(head)}
    many = dispatch(dispatcher, token, "eth_getLogs", [recent])
    assert many["error"]["code"] == -32005  # one log, and the limit is zero
    history = dispatch(dispatcher, token, "eth_feeHistory", ["0x400", "latest"])
    assert len(history["result"]["gasUsedRatio"]) == 2


def test_websocket_new_heads_subscription(
    server: LiveServer, token: str, node: LocalNodeView
) -> None:
    url = f"ws://127.0.0.1:{server.port}/ws"
    with connect(url, additional_headers={"Authorization": f"Bearer {token}"}) as ws:
        ws.send(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_chainId"}))
        assert json.loads(ws.recv(timeout=10))["result"] == hex(CHAIN_ID)
        ws.send(
            json.dumps(
                {"jsonrpc": "2.0", "id": 2, "method": "eth_subscribe", "params": ["newHeads"]}
            )
        )
        subscription = json.loads(ws.recv(timeout=10))["result"]
        time.sleep(0.3)  # let the subscription take its starting head
        block = node.produce_block()
        note = json.loads(ws.recv(timeout=10))
        assert note["method"] == "eth_subscription"
        assert note["params"]["subscription"] == subscription
        assert note["params"]["result"]["hash"] == "0x" + block.hash().hex()
        ws.send(
            json.dumps(
                {"jsonrpc": "2.0", "id": 3, "method": "eth_unsubscribe", "params": [subscription]}
            )
        )
        assert json.loads(ws.recv(timeout=10))["result"] is True
        ws.send(b"[" * 10_000)
        assert json.loads(ws.recv(timeout=10))["error"]["code"] == -32700


def test_websocket_subscription_needs_a_token(server: LiveServer) -> None:
    with connect(f"ws://127.0.0.1:{server.port}/ws") as ws:
        ws.send(
            json.dumps(
                {"jsonrpc": "2.0", "id": 1, "method": "eth_subscribe", "params": ["newHeads"]}
            )
        )
        error = json.loads(ws.recv(timeout=10))["error"]
        assert error == {"code": -32001, "message": "unauthorized: no token"}


@pytest.mark.parametrize("kind", ["logs", "newPendingTransactions"])
def test_websocket_refuses_other_subscriptions(server: LiveServer, token: str, kind: str) -> None:
    url = f"ws://127.0.0.1:{server.port}/ws?token={token}"
    with connect(url) as ws:
        ws.send(
            json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_subscribe", "params": [kind]})
        )
        assert json.loads(ws.recv(timeout=10))["error"]["code"] == -32602
