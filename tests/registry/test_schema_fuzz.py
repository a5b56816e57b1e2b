"""Schemathesis over the registry API's OpenAPI document: no input makes it answer 5xx.

The app is the ``/v1`` sub-app itself (paths as the schema names them), in process, over
a real chain that holds a dataset, a model and an open round with an update, so that
generated requests reach real records as well as the error paths. Every request carries
a valid token (the no-token paths are covered in test_api.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from node.chain.genesis import GenesisState
from registry.api.app import create_v1_app
from registry.fl import encode_dense, save_model
from tests.registry.conftest import PUBLISHER, TWINS, Env, _open_env, model_tensors

_TOKEN: dict[str, str] = {}


@pytest.fixture
def registry_app(genesis: GenesisState, tmp_path: Path) -> Iterator[FastAPI]:
    """The /v1 app over a chain with a few records; its token is put in _TOKEN."""
    from fastapi.testclient import TestClient

    from registry.api.app import create_registry_app

    node, auth, blobs, clock = _open_env(genesis, tmp_path)
    full = create_registry_app(node, auth, blobs=blobs, max_wait_seconds=1)
    with TestClient(full, raise_server_exceptions=False) as client:
        env = Env(node, auth, blobs, clock, full, client, {})
        data = save_model(model_tensors())
        digest = env.upload(PUBLISHER, data)
        raw = bytes.fromhex(digest[7:])
        env.send(PUBLISHER, "registerDataset", "ds", raw, len(data), "application/x", bytes(32))
        env.send(PUBLISHER, "registerModel", "m", raw, len(data), "safetensors", [], [1], bytes(32))
        env.send(PUBLISHER, "setAlias", "m", "production", 1)
        env.send(PUBLISHER, "openRound", "m", 1, 2, 1000)
        update = encode_dense(model_tensors(1))
        u = env.upload(TWINS[0], update)
        env.send(TWINS[0], "pushUpdate", 1, bytes.fromhex(u[7:]), len(update), 5, 0, bytes(32))
        _TOKEN["value"] = env.token(PUBLISHER)
    yield create_v1_app(node, auth, blobs=blobs, max_wait_seconds=1)
    node.close()


def test_no_input_makes_the_api_fail_on_its_side(registry_app: FastAPI) -> None:
    """Every operation, 15 generated cases each (deterministic): never a 5xx.

    Runs the operations in a loop rather than through schemathesis' pytest plugin,
    which does not load under pytest 9.
    """
    schema = schemathesis.openapi.from_asgi("/openapi.json", registry_app)
    headers = {"Authorization": f"Bearer {_TOKEN['value']}"}
    failures: list[str] = []
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1

        @given(case=operation.as_strategy())
        @settings(
            max_examples=15,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        def check(case: schemathesis.Case) -> None:
            case.call_and_validate(headers=headers, checks=[not_a_server_error])

        try:
            check()
        except Exception as exc:
            failures.append(f"{operation.label}: {exc}")
    assert operations >= 20
    assert failures == []
