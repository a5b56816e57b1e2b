"""JSON-RPC 2.0 over HTTP: batches, standard errors for every kind of bad input, auth."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from eth_account import Account
from eth_account.messages import encode_defunct
from web3 import Web3

from tests.rpc.conftest import (
    AUDITOR,
    CHAIN_ID,
    OUTSIDER,
    PUBLISHER,
    LiveServer,
    ManualClock,
    rpc,
    sign_in,
)


def post(server: LiveServer, body: Any, token: str | None = None, **kwargs: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(server.url, content=content, headers=headers, timeout=30, **kwargs)


def call(method: str, params: Any = None, request_id: Any = 1) -> dict[str, Any]:
    body: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
    if params is not None:
        body["params"] = params
    return body


def error_code(response: httpx.Response) -> int:
    return int(response.json()["error"]["code"])


def test_malformed_json_is_a_parse_error(server: LiveServer) -> None:
    for body in (b"{", b"not json", b"\xff\xfe", b"[" * 100_000, b'{"a": 1' + b"9" * 5000 + b"}"):
        response = post(server, body)
        assert response.status_code == 200
        assert response.json()["id"] is None
        assert error_code(response) == -32700


@pytest.mark.parametrize(
    "body",
    [
        1,
        "eth_chainId",
        None,
        {"id": 1, "method": "eth_chainId"},  # no jsonrpc member
        {"jsonrpc": "1.0", "id": 1, "method": "eth_chainId"},
        {"jsonrpc": "2.0", "id": 1, "method": 7},
        {"jsonrpc": "2.0", "id": [1], "method": "eth_chainId"},
        {"jsonrpc": "2.0", "id": True, "method": "eth_chainId"},
        [],
    ],
)
def test_ill_formed_requests_are_invalid_requests(server: LiveServer, body: Any) -> None:
    response = post(server, body)
    assert response.status_code == 200
    assert error_code(response) == -32600


def test_invalid_request_echoes_a_valid_id(server: LiveServer) -> None:
    response = post(server, {"jsonrpc": "1.0", "id": "abc", "method": "eth_chainId"})
    assert response.json()["id"] == "abc"


def test_unknown_method_is_method_not_found(server: LiveServer, token: str) -> None:
    response = post(server, call("eth_mine"), token)
    assert error_code(response) == -32601
    assert "eth_mine" in response.json()["error"]["message"]


@pytest.mark.parametrize(
    ("method", "params"),
    [
        ("eth_getBalance", ["0x1234"]),
        ("eth_getBalance", [PUBLISHER.address, "newest"]),
        ("eth_getBalance", []),
        ("eth_getBlockByNumber", ["latest", "yes"]),
        ("eth_getBlockByNumber", ["0x" + "f" * 70, False]),
        ("eth_getBlockByNumber", ["-0x1", False]),
        ("eth_getBlockByHash", ["0x1234", False]),
        ("eth_call", [{"to": PUBLISHER.address, "bogus": 1}]),
        ("eth_call", [{"to": PUBLISHER.address, "data": "0x1"}]),
        ("eth_call", [{"to": PUBLISHER.address, "data": "0x00", "input": "0x01"}]),
        ("eth_call", [{"to": PUBLISHER.address}, "latest", {"0x00": {}}]),
        ("eth_getLogs", [{"topics": [1]}]),
        ("eth_getLogs", [{"fromBlock": "0x2", "toBlock": "0x1"}]),
        ("eth_getLogs", [{"blockHash": "0x" + "00" * 32, "fromBlock": "0x0"}]),
        ("eth_getLogs", [{"topics": [None, None, None, None, None]}]),
        ("eth_feeHistory", ["0x2", "latest", [50, 10]]),
        ("eth_chainId", ["extra"]),
        ("eth_sendRawTransaction", ["0xzz"]),
        ("eth_blockNumber", {"named": "params"}),
        ("twin_getValidatorSet", ["x"]),
        ("twin_authToken", [PUBLISHER.address, "0x00"]),
    ],
)
def test_wrong_params_are_invalid_params(
    server: LiveServer, token: str, method: str, params: Any
) -> None:
    response = post(server, call(method, params), token)
    assert response.status_code == 200
    assert error_code(response) == -32602, response.json()


def test_oversized_body_is_413_with_invalid_request(server: LiveServer) -> None:
    huge = call("eth_sendRawTransaction", ["0x" + "00" * 200_000])
    response = post(server, huge)
    assert response.status_code == 413
    assert error_code(response) == -32600
    chunks = (b" " * 65_536 for _ in range(8))  # no Content-Length: streamed and cut off
    streamed = httpx.post(server.url, content=chunks, timeout=30)
    assert streamed.status_code == 413


def test_batch_answers_each_request_in_order(server: LiveServer, token: str) -> None:
    batch = [
        call("eth_chainId", [], 1),
        call("eth_nope", [], 2),
        {"jsonrpc": "2.0", "method": "eth_blockNumber"},  # notification: no answer
        call("eth_blockNumber", [], "three"),
        42,
    ]
    response = post(server, batch, token)
    assert response.status_code == 200
    answers = response.json()
    assert [a["id"] for a in answers] == [1, 2, "three", None]
    assert answers[0]["result"] == hex(CHAIN_ID)
    assert answers[1]["error"]["code"] == -32601
    assert answers[2]["result"].startswith("0x")
    assert answers[3]["error"]["code"] == -32600


def test_batch_of_notifications_gets_no_body(server: LiveServer) -> None:
    response = post(server, [{"jsonrpc": "2.0", "method": "eth_chainId"}] * 3)
    assert response.status_code == 204
    assert response.content == b""


def test_batch_size_is_limited(server: LiveServer) -> None:
    response = post(server, [call("eth_chainId", [], i) for i in range(101)])
    assert error_code(response) == -32600
    assert "limit" in response.json()["error"]["message"]


def test_batch_reports_auth_failures_per_item(server: LiveServer) -> None:
    response = post(server, [call("eth_chainId", [], 1), call("eth_blockNumber", [], 2)])
    assert response.status_code == 200
    first, second = response.json()
    assert first["result"] == hex(CHAIN_ID)
    assert second["error"] == {"code": -32001, "message": "unauthorized: no token"}


@pytest.mark.parametrize("method", ["web3_clientVersion", "eth_chainId", "net_version"])
def test_public_methods_need_no_token(server: LiveServer, method: str) -> None:
    assert "result" in rpc(server.url, method)


def test_missing_token_is_401_with_reason(server: LiveServer) -> None:
    response = post(server, call("eth_blockNumber", []))
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert response.json()["error"] == {"code": -32001, "message": "unauthorized: no token"}


def test_forged_token_is_refused(server: LiveServer, token: str) -> None:
    prefix, payload, mac = token.split(".")
    forged = f"{prefix}.{payload}.{mac[:-2]}AA"
    response = post(server, call("eth_blockNumber", []), forged)
    assert response.status_code == 401
    assert response.json()["error"]["message"] == "unauthorized: token signature invalid"
    garbage = post(server, call("eth_blockNumber", []), "not-a-token")
    assert garbage.json()["error"]["message"] == "unauthorized: malformed token"


def test_expired_token_is_refused(server: LiveServer, clock: ManualClock) -> None:
    fresh = sign_in(server.url, AUDITOR)
    assert "result" in rpc(server.url, "eth_blockNumber", token=fresh)
    clock.offset = 901
    try:
        response = post(server, call("eth_blockNumber", []), fresh)
    finally:
        clock.offset = 0
    assert response.status_code == 401
    assert response.json()["error"]["message"] == "unauthorized: token expired"


def test_replayed_challenge_signature_is_refused(server: LiveServer) -> None:
    message = rpc(server.url, "twin_authChallenge", [AUDITOR.address])["result"]["message"]
    signature = Account.sign_message(encode_defunct(text=message), AUDITOR.private).signature
    params = [AUDITOR.address, "0x" + signature.hex()]
    assert "token" in rpc(server.url, "twin_authToken", params)["result"]
    replay = post(server, call("twin_authToken", params))
    assert replay.status_code == 401
    assert replay.json()["error"]["code"] == -32001


def test_account_without_role_is_forbidden(server: LiveServer) -> None:
    message = rpc(server.url, "twin_authChallenge", [OUTSIDER.address])["result"]["message"]
    signature = Account.sign_message(encode_defunct(text=message), OUTSIDER.private).signature
    response = post(server, call("twin_authToken", [OUTSIDER.address, "0x" + signature.hex()]))
    assert response.status_code == 403
    assert response.json()["error"]["code"] == -32001
    assert response.json()["error"]["message"].startswith("forbidden:")


def test_web3_without_token_gets_an_http_error(server: LiveServer) -> None:
    w3 = Web3(Web3.HTTPProvider(server.url, exception_retry_configuration=None))
    assert w3.eth.chain_id == CHAIN_ID  # public
    with pytest.raises(Exception, match="401"):
        w3.eth.block_number  # noqa: B018


def test_execution_revert_carries_geth_code_3_and_data(server: LiveServer, token: str) -> None:
    # Membership.approve on a proposal that does not exist reverts with Error(string).
    selector = Web3.keccak(text="approve(uint256)")[:4].hex()
    data = "0x" + selector + "00" * 31 + "63"
    response = post(
        server,
        call("eth_call", [{"to": "0x0000000000000000000000000000000000007c01", "data": data}]),
        token,
    )
    error = response.json()["error"]
    assert error["code"] == 3
    assert error["message"].startswith("execution reverted")
    assert error["data"].startswith("0x08c379a0")


def test_state_at_unknown_block_is_header_not_found(server: LiveServer, token: str) -> None:
    response = post(server, call("eth_getBalance", [PUBLISHER.address, "0x" + "f" * 12]), token)
    assert error_code(response) == -32000
    assert response.json()["error"]["message"] == "header not found"


def test_unexecutable_call_is_a_server_error(server: LiveServer, token: str) -> None:
    rich = {"from": OUTSIDER.address, "to": PUBLISHER.address, "value": hex(10**30)}
    for method in ("eth_call", "eth_estimateGas"):
        response = post(server, call(method, [rich]), token)
        assert error_code(response) == -32000, response.json()
