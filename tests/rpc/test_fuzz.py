"""Hypothesis fuzzing: no params and no request shape make the server answer -32603
(internal error) or HTTP 500, or take it down.

Params are fuzzed through the dispatcher in-process (the exact code path of a request,
minus the socket), so hundreds of examples run in seconds; request shapes and raw bytes
go over real HTTP."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from node.rpc.methods import METHODS
from tests.rpc.conftest import CHAIN_ID, PUBLISHER, LiveServer

_INTERESTING = [
    "latest",
    "earliest",
    "pending",
    "safe",
    "finalized",
    "0x",
    "0x0",
    "0x00",
    "0x1",
    "-0x1",
    "0xzz",
    "0x" + "f" * 16,
    "0x" + "f" * 64,
    "0x" + "f" * 65,
    PUBLISHER.address,
    "0x0000000000000000000000000000000000007c01",
    "0x0000000000000000000000000000000000007c02",
    "0x" + "00" * 32,
    "0x" + "ab" * 32,
    "0x08c379a0",
    "newHeads",
]
_KEYS = [
    "to",
    "from",
    "data",
    "input",
    "gas",
    "value",
    "gasPrice",
    "fromBlock",
    "toBlock",
    "blockHash",
    "blockNumber",
    "requireCanonical",
    "address",
    "topics",
    "accessList",
]

hex_strings = st.one_of(
    st.binary(max_size=40).map(lambda b: "0x" + b.hex()),
    st.integers(min_value=0, max_value=2**300).map(hex),
    st.sampled_from(_INTERESTING),
)
leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**300), max_value=2**300),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=16),
    hex_strings,
)
json_values = st.recursive(
    leaves,
    lambda children: st.one_of(
        st.lists(children, max_size=5),
        st.dictionaries(st.sampled_from(_KEYS) | st.text(max_size=6), children, max_size=5),
    ),
    max_leaves=10,
)


@pytest.fixture(scope="module")
def http(server: LiveServer, token: str) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=server.url, headers=headers, timeout=60) as client:
        yield client


def assert_handled(response: httpx.Response) -> None:
    assert response.status_code in (200, 204, 401, 403), response.text
    if response.status_code == 204:
        return
    body: Any = response.json()
    for answer in body if isinstance(body, list) else [body]:
        error = answer.get("error")
        if error is not None:
            assert error["code"] != -32603, answer
            assert isinstance(error["message"], str)
        else:
            assert "result" in answer


@settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(method=st.sampled_from(sorted(METHODS)), params=st.lists(json_values, max_size=4))
def test_no_params_cause_an_internal_error(
    http: httpx.Client, method: str, params: list[Any]
) -> None:
    body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
    assert_handled(http.post("/", content=json.dumps(body)))


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    request=st.one_of(
        json_values,
        st.fixed_dictionaries(
            {
                "jsonrpc": st.sampled_from(["2.0", "1.0"]) | leaves,
                "method": leaves | st.sampled_from(sorted(METHODS)),
            },
            optional={"id": json_values, "params": json_values},
        ),
    ),
    batch=st.booleans(),
)
def test_no_request_shape_causes_an_internal_error(
    http: httpx.Client, request: Any, batch: bool
) -> None:
    body = [request, request] if batch else request
    assert_handled(http.post("/", content=json.dumps(body)))


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=st.binary(max_size=300))
def test_no_bytes_cause_an_internal_error(http: httpx.Client, body: bytes) -> None:
    assert_handled(http.post("/", content=body))


def test_the_server_still_answers_after_fuzzing(http: httpx.Client) -> None:
    body = {"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}
    assert http.post("/", json=body).json()["result"] == hex(CHAIN_ID)
