"""The registry REST API in-process, over a real single-node chain and blob store."""

from __future__ import annotations

import base64
import hashlib
import os
from typing import Any

import httpx
import pytest
from eth_account import Account
from eth_account.messages import encode_defunct

from node.blobs import ArtifactDigest
from registry.api.app import create_registry_app
from registry.fl import aggregate_bytes, encode_dense, encode_sparse, save_model
from tests.registry.conftest import (
    AUDITOR,
    MAX_BLOB,
    MINER,
    OUTSIDER,
    PUBLISHER,
    TWINS,
    Env,
    LiveServer,
    model_tensors,
)

Z32 = bytes(32)


def raw(digest: str) -> bytes:
    return bytes.fromhex(digest.removeprefix("sha256:"))


def error(response: Any) -> tuple[str, str]:
    body = response.json()["error"]
    return body["code"], body["message"]


def register_model(
    env: Env, name: str = "link-quality", seed: int = 0, parents: list[int] | None = None
) -> tuple[bytes, dict[str, Any]]:
    data = save_model(model_tensors(seed))
    digest = env.upload(PUBLISHER, data)
    reply = env.send(
        PUBLISHER,
        "registerModel",
        name,
        raw(digest),
        len(data),
        "safetensors",
        parents or [],
        [],
        Z32,
    )
    return data, reply


def deltas(seed: int) -> dict[str, Any]:
    return {k: v * 0.01 for k, v in model_tensors(100 + seed).items()}


def open_round_with_updates(env: Env, updates: int = 2) -> tuple[bytes, list[bytes], list[int]]:
    base, _ = register_model(env)
    env.send(PUBLISHER, "openRound", "link-quality", 1, updates, 1000)
    blobs, samples = [], []
    for i in range(updates):
        blob = encode_sparse(deltas(i), k=3) if i % 2 else encode_dense(deltas(i))
        digest = env.upload(TWINS[i], blob)
        env.send(TWINS[i], "pushUpdate", 1, raw(digest), len(blob), 10 + i, i % 2, Z32)
        blobs.append(blob)
        samples.append(10 + i)
    return base, blobs, samples


# ---------------------------------------------------------------- auth


def test_sign_in_gives_a_token_that_reads(env: Env) -> None:
    response = env.client.get("/v1/chain", headers=env.headers(AUDITOR))
    assert response.status_code == 200
    assert response.json()["chain_id"] == env.node.chain_id


def test_no_token_is_401_with_reason(env: Env) -> None:
    response = env.client.get("/v1/models")
    assert response.status_code == 401
    assert error(response) == ("unauthorized", "no token")
    assert response.headers["www-authenticate"].startswith("Bearer")


def test_forged_token_is_401(env: Env) -> None:
    prefix, payload, mac = env.token(PUBLISHER).split(".")
    forged = f"{prefix}.{payload}.{'A' * len(mac)}"
    response = env.client.get("/v1/models", headers={"Authorization": f"Bearer {forged}"})
    assert response.status_code == 401
    assert error(response) == ("unauthorized", "token signature invalid")


def test_expired_token_is_401(env: Env) -> None:
    headers = env.headers(PUBLISHER)
    env.clock.offset += env.auth.ttl_seconds + 1
    response = env.client.get("/v1/models", headers=headers)
    assert response.status_code == 401
    assert error(response) == ("unauthorized", "token expired")


def test_replayed_challenge_signature_is_401(env: Env) -> None:
    message = env.client.post("/v1/auth/challenge", json={"address": PUBLISHER.address})
    text = message.json()["message"]
    signature = Account.sign_message(encode_defunct(text=text), PUBLISHER.private).signature
    body = {"address": PUBLISHER.address, "signature": "0x" + signature.hex()}
    assert env.client.post("/v1/auth/token", json=body).status_code == 200
    replay = env.client.post("/v1/auth/token", json=body)
    assert replay.status_code == 401
    assert "no outstanding challenge" in error(replay)[1]


def test_account_without_role_gets_403_at_sign_in(env: Env) -> None:
    text = env.client.post("/v1/auth/challenge", json={"address": OUTSIDER.address}).json()
    signature = Account.sign_message(encode_defunct(text=text["message"]), OUTSIDER.private)
    response = env.client.post(
        "/v1/auth/token",
        json={"address": OUTSIDER.address, "signature": "0x" + signature.signature.hex()},
    )
    assert response.status_code == 403
    assert error(response)[1].endswith("holds no role on this network")


def test_malformed_and_deep_json_bodies_are_refused(env: Env) -> None:
    bad = env.client.post("/v1/auth/challenge", content=b"{nope")
    assert bad.status_code == 400 and error(bad)[0] == "invalid_input"
    deep = env.client.post("/v1/auth/challenge", content=b"[" * 100_000 + b"]" * 100_000)
    assert deep.status_code == 400
    assert "deeper than" in error(deep)[1]
    wrong = env.client.post("/v1/auth/challenge", json={"address": "0x12"})
    assert wrong.status_code == 422
    assert error(wrong)[1].startswith("invalid body: address:")


# ---------------------------------------------------------------- blobs


def test_upload_then_download_with_digest_headers(env: Env) -> None:
    data = os.urandom(5000)
    digest = str(ArtifactDigest.of(data))
    put = env.client.put(f"/v1/blobs/{digest}", content=data, headers=env.headers(TWINS[0]))
    assert put.status_code == 201
    assert put.json() == {"digest": digest, "size": 5000, "created": True}
    again = env.client.put(f"/v1/blobs/{digest}", content=data, headers=env.headers(TWINS[0]))
    assert again.status_code == 200 and again.json()["created"] is False
    got = env.client.get(f"/v1/blobs/{digest}", headers=env.headers(AUDITOR))
    assert got.status_code == 200 and got.content == data
    assert got.headers["etag"] == f'"{digest}"'
    expected_b64 = base64.b64encode(hashlib.sha256(data).digest()).decode()
    assert got.headers["repr-digest"] == f"sha-256=:{expected_b64}:"
    head = env.client.head(f"/v1/blobs/{digest}", headers=env.headers(AUDITOR))
    assert head.status_code == 200 and head.headers["content-length"] == "5000"
    assert head.content == b""


def test_ranges_if_range_and_if_none_match(env: Env) -> None:
    data = bytes(range(256)) * 4
    digest = env.upload(TWINS[0], data)
    headers = env.headers(AUDITOR)
    url = f"/v1/blobs/{digest}"
    part = env.client.get(url, headers={**headers, "Range": "bytes=10-19"})
    assert part.status_code == 206 and part.content == data[10:20]
    assert part.headers["content-range"] == f"bytes 10-19/{len(data)}"
    tail = env.client.get(url, headers={**headers, "Range": "bytes=1000-"})
    assert tail.status_code == 206 and tail.content == data[1000:]
    suffix = env.client.get(url, headers={**headers, "Range": "bytes=-5"})
    assert suffix.content == data[-5:]
    outside = env.client.get(url, headers={**headers, "Range": "bytes=5000-"})
    assert outside.status_code == 416
    assert outside.headers["content-range"] == f"bytes */{len(data)}"
    stale = env.client.get(url, headers={**headers, "Range": "bytes=0-1", "If-Range": '"x"'})
    assert stale.status_code == 200 and stale.content == data
    fresh = env.client.get(url, headers={**headers, "If-None-Match": f'"{digest}"'})
    assert fresh.status_code == 304


def test_digest_mismatch_is_400_and_stores_nothing(env: Env) -> None:
    claimed = str(ArtifactDigest.of(b"the real thing"))
    response = env.client.put(
        f"/v1/blobs/{claimed}", content=b"something else", headers=env.headers(TWINS[0])
    )
    assert response.status_code == 400
    code, message = error(response)
    assert code == "invalid_input" and message.startswith(f"digest mismatch: expected {claimed}")
    assert env.blobs.list() == []
    assert list((env.blobs.root / "tmp").iterdir()) == []


def test_oversized_upload_is_413_and_stores_nothing(env: Env) -> None:
    data = b"x" * (MAX_BLOB + 1)
    digest = str(ArtifactDigest.of(data))
    response = env.client.put(f"/v1/blobs/{digest}", content=data, headers=env.headers(TWINS[0]))
    assert response.status_code == 413
    assert error(response) == (
        "payload_too_large",
        f"blob exceeds the limit of {MAX_BLOB} bytes (declared {MAX_BLOB + 1})",
    )

    def chunks() -> Any:  # no Content-Length: cut off while streaming
        for _ in range(MAX_BLOB // 65536 + 2):
            yield b"y" * 65536

    streamed = env.client.put(
        f"/v1/blobs/{digest}", content=chunks(), headers=env.headers(TWINS[0])
    )
    assert streamed.status_code == 413
    assert error(streamed)[1] == f"blob exceeds the limit of {MAX_BLOB} bytes"
    assert env.blobs.list() == []
    assert list((env.blobs.root / "tmp").iterdir()) == []


def test_auditor_may_not_upload(env: Env) -> None:
    digest = str(ArtifactDigest.of(b"a"))
    response = env.client.put(f"/v1/blobs/{digest}", content=b"a", headers=env.headers(AUDITOR))
    assert response.status_code == 403
    assert "may not upload artifacts" in error(response)[1]
    assert env.blobs.list() == []


def test_bad_and_unknown_digests(env: Env) -> None:
    headers = env.headers(AUDITOR)
    bad = env.client.get("/v1/blobs/sha256:ABC", headers=headers)
    assert bad.status_code == 400 and "invalid artifact digest" in error(bad)[1]
    unknown = env.client.get(f"/v1/blobs/sha256:{'0' * 64}", headers=headers)
    assert unknown.status_code == 404
    assert error(unknown) == ("not_found", f"blob sha256:{'0' * 64} is not stored")


def _tamper(env: Env, digest: str) -> None:
    path = env.blobs.path(ArtifactDigest(raw(digest)))
    os.chmod(path, 0o644)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_blob_corrupt_on_disk_is_never_served_as_valid(env: Env) -> None:
    data = os.urandom(3000)
    digest = env.upload(TWINS[0], data)
    _tamper(env, digest)
    headers = env.headers(AUDITOR)
    full = env.client.get(f"/v1/blobs/{digest}", headers=headers)
    assert full.status_code == 500
    assert error(full) == ("storage_error", f"blob {digest} is corrupt on disk")
    ranged = env.client.get(f"/v1/blobs/{digest}", headers={**headers, "Range": "bytes=0-9"})
    assert ranged.status_code == 500


def test_large_corrupt_blob_stream_never_completes(env: Env) -> None:
    """Over real HTTP, a blob too large to verify first is cut off before its end."""
    app = create_registry_app(env.node, env.auth, blobs=env.blobs, verify_first_bytes=0)
    server = LiveServer(app)
    server.start()
    try:
        data = os.urandom(MAX_BLOB)
        digest = env.upload(TWINS[0], data)
        _tamper(env, digest)
        received = bytearray()
        url = f"{server.url}/v1/blobs/{digest}"
        # the body ends before Content-Length: never a complete, valid download
        with (
            pytest.raises(httpx.HTTPError),
            httpx.stream("GET", url, headers=env.headers(AUDITOR)) as response,
        ):
            assert response.headers["content-length"] == str(len(data))
            for chunk in response.iter_bytes():
                received += chunk
        assert len(received) < len(data)
    finally:
        server.stop()


# ---------------------------------------------------------------- transactions and records


def test_registered_model_carries_its_proof(env: Env) -> None:
    data, reply = register_model(env)
    assert reply["status"] == "committed"
    assert [e["name"] for e in reply["events"]] == ["ModelVersionRegistered"]
    record = env.client.get(
        "/v1/models/link-quality/versions/1", headers=env.headers(AUDITOR)
    ).json()
    assert record["digest"] == str(ArtifactDigest.of(data))
    assert record["status"] == "active"
    proof = record["proof"]
    assert proof["tx_hash"] == reply["tx_hash"]
    assert proof["block_height"] == reply["block_height"]
    header = env.node.header_by_number(proof["block_height"])
    assert header is not None and proof["block_hash"] == "0x" + bytes(header.hash()).hex()
    assert proof["registrant"] == PUBLISHER.lower
    tx = env.client.get(f"/v1/transactions/{reply['tx_hash']}", headers=env.headers(AUDITOR))
    assert tx.status_code == 200 and tx.json()["block_hash"] == proof["block_hash"]
    artifact = env.client.get(
        "/v1/models/link-quality/versions/latest/artifact", headers=env.headers(AUDITOR)
    )
    assert artifact.content == data
    assert artifact.headers["x-twinchain-version-status"] == "active"
    models = env.client.get("/v1/models", headers=env.headers(AUDITOR)).json()
    assert models == [{"name": "link-quality", "versions": 1, "latest": 1, "aliases": {}}]
    model = env.client.get("/v1/models/link-quality", headers=env.headers(AUDITOR)).json()
    assert [v["id"] for v in model["version_list"]] == [1]
    by_id = env.client.get("/v1/versions/1", headers=env.headers(AUDITOR)).json()
    assert by_id == record


def test_refs_resolve_and_never_to_a_revoked_version(env: Env) -> None:
    register_model(env, seed=1)
    register_model(env, seed=2, parents=[1])
    env.send(PUBLISHER, "setAlias", "link-quality", "production", 2)
    h = env.headers(AUDITOR)

    def ref(r: str) -> Any:
        return env.client.get(f"/v1/models/link-quality/versions/{r}", headers=h)

    assert ref("production").json()["id"] == 2
    assert ref("production").json()["aliases"] == ["production"]
    assert ref("latest").json()["id"] == 2
    env.send(PUBLISHER, "revokeVersion", 2, "poisoned")
    assert ref("latest").json()["id"] == 1
    gone = ref("production")
    assert gone.status_code == 404
    assert error(gone) == ("not_found", "model 'link-quality' has no alias 'production'")
    revoked = ref("2").json()
    assert revoked["status"] == "revoked" and revoked["status_reason"] == "poisoned"
    env.send(PUBLISHER, "revokeVersion", 1, "also poisoned")
    none = ref("latest")
    assert none.status_code == 404
    assert error(none)[1] == "model 'link-quality' has no live (non-revoked) version"


def test_unknown_model_or_ref_is_404(env: Env) -> None:
    register_model(env)
    h = env.headers(AUDITOR)
    cases = {
        "/v1/models/nope": "unknown model 'nope'",
        "/v1/models/nope/versions/1": "unknown model 'nope'",
        "/v1/models/link-quality/versions/9": "model 'link-quality' has no version 9",
        "/v1/models/link-quality/versions/0": "model 'link-quality' has no version 0",
        "/v1/models/link-quality/versions/staging": "model 'link-quality' has no alias 'staging'",
        "/v1/models/link-quality/versions/9/artifact": "model 'link-quality' has no version 9",
        "/v1/datasets/nope": "unknown dataset 'nope'",
        "/v1/rounds/7": "unknown round",
        "/v1/updates/7": "unknown update",
        "/v1/versions/7": "unknown version",
    }
    for url, message in cases.items():
        response = env.client.get(url, headers=h)
        assert response.status_code == 404, url
        assert error(response) == ("not_found", message), url
    huge = env.client.get("/v1/models/link-quality/versions/" + "9" * 79, headers=h)
    assert huge.status_code in (404, 422)


def test_duplicate_registration_is_409(env: Env) -> None:
    data, _ = register_model(env)
    digest = ArtifactDigest.of(data)
    raw_tx = env.raw_tx(
        PUBLISHER, "registerModel", "other", digest.raw, len(data), "st", [], [], Z32
    )
    response = env.client.post(
        "/v1/transactions", json={"raw": raw_tx}, headers=env.headers(PUBLISHER)
    )
    assert response.status_code == 409
    assert error(response) == ("conflict", "the contract refuses it: digest already registered")
    assert env.client.get("/v1/models/other", headers=env.headers(PUBLISHER)).status_code == 404


def test_wrong_role_transaction_is_403(env: Env) -> None:
    data = save_model(model_tensors(5))
    digest = env.upload(TWINS[0], data)
    raw_tx = env.raw_tx(TWINS[0], "registerModel", "m", raw(digest), len(data), "st", [], [], Z32)
    response = env.client.post(
        "/v1/transactions", json={"raw": raw_tx}, headers=env.headers(TWINS[0])
    )
    assert response.status_code == 403
    assert error(response) == ("forbidden", "the contract refuses it: not a PUBLISHER")


def test_registration_before_upload_is_409(env: Env) -> None:
    digest = ArtifactDigest.of(b"never uploaded")
    raw_tx = env.raw_tx(PUBLISHER, "registerDataset", "ds", digest.raw, 14, "text/csv", Z32)
    response = env.client.post(
        "/v1/transactions", json={"raw": raw_tx}, headers=env.headers(PUBLISHER)
    )
    assert response.status_code == 409
    assert error(response)[1] == (
        f"artifact {digest} of 14 bytes is not stored on this miner: "
        f"upload it with PUT /v1/blobs/{digest} first"
    )
    assert env.node.store.head().height == 0


def test_undecodable_transactions_are_400(env: Env) -> None:
    h = env.headers(PUBLISHER)
    garbage = env.client.post("/v1/transactions", json={"raw": "0x02c0"}, headers=h)
    assert garbage.status_code == 400 and "malformed transaction" in error(garbage)[1]
    not_hex = env.client.post("/v1/transactions", json={"raw": "zz"}, headers=h)
    assert not_hex.status_code == 422
    bad_hash = env.client.get("/v1/transactions/0x1234", headers=h)
    assert bad_hash.status_code == 400
    unknown = env.client.get(f"/v1/transactions/0x{'ab' * 32}", headers=h)
    assert unknown.status_code == 404


def test_datasets(env: Env) -> None:
    data = b"rssi,snr\n1,2\n"
    digest = env.upload(PUBLISHER, data)
    reply = env.send(
        PUBLISHER, "registerDataset", "channels", raw(digest), len(data), "text/csv", Z32
    )
    h = env.headers(AUDITOR)
    listed = env.client.get("/v1/datasets", headers=h).json()
    assert [d["name"] for d in listed] == ["channels"]
    assert listed[0]["proof"]["tx_hash"] == reply["tx_hash"]
    versions = env.client.get("/v1/datasets/channels", headers=h).json()
    assert [v["version"] for v in versions] == [1]
    latest = env.client.get("/v1/datasets/channels/versions/latest", headers=h).json()
    assert latest["digest"] == digest and latest["media_type"] == "text/csv"
    artifact = env.client.get("/v1/datasets/channels/versions/1/artifact", headers=h)
    assert artifact.content == data
    missing = env.client.get("/v1/datasets/channels/versions/prod", headers=h)
    assert missing.status_code == 404


def test_account_and_chain(env: Env) -> None:
    h = env.headers(AUDITOR)
    account = env.client.get(f"/v1/accounts/{TWINS[1].address}", headers=h).json()
    assert account == {"address": TWINS[1].lower, "nonce": 0, "roles": ["TWIN"], "role_bits": 4}
    assert env.client.get("/v1/accounts/0x12", headers=h).status_code == 400


# ---------------------------------------------------------------- rounds


def test_round_lifecycle_with_honest_aggregate_and_lineage(env: Env) -> None:
    base, blobs, samples = open_round_with_updates(env, 2)
    h = env.headers(AUDITOR)
    round_ = env.client.get("/v1/rounds/1", headers=h).json()
    assert round_["status"] == "open" and round_["update_ids"] == [1, 2]
    assert round_["proof"]["registrant"] == PUBLISHER.lower
    updates = env.client.get("/v1/rounds/1/updates", headers=h).json()
    assert [(u["twin"], u["kind"], u["samples"]) for u in updates] == [
        (TWINS[0].lower, "dense", 10),
        (TWINS[1].lower, "sparse", 11),
    ]
    model, hex_digest = aggregate_bytes(base, blobs, samples, "fedavg")
    env.upload(MINER, model)
    closed = env.send(
        MINER, "closeRound", 1, "fedavg", [1, 2], bytes.fromhex(hex_digest), len(model)
    )
    assert [e["name"] for e in closed["events"]] == ["ModelVersionRegistered", "RoundClosed"]
    round_ = env.client.get("/v1/rounds/1", headers=h).json()
    assert round_["status"] == "closed" and round_["result_version"] == 2
    assert round_["close_proof"]["tx_hash"] == closed["tx_hash"]
    lineage = env.client.get("/v1/models/link-quality/lineage", headers=h).json()
    assert lineage["root"] == 2
    assert [v["id"] for v in lineage["versions"]] == [2, 1]
    assert [r["id"] for r in lineage["rounds"]] == [1]
    assert {u["twin"] for u in lineage["updates"]} == {TWINS[0].lower, TWINS[1].lower}
    assert env.client.get("/v1/rounds", params={"status": "open"}, headers=h).json() == []
    assert len(env.client.get("/v1/rounds", headers=h).json()) == 1


def test_lying_aggregate_is_refused_400(env: Env) -> None:
    base, blobs, samples = open_round_with_updates(env, 2)
    lie, _ = aggregate_bytes(base, blobs, samples, "median")
    env.upload(MINER, lie)
    raw_tx = env.raw_tx(
        MINER, "closeRound", 1, "fedavg", [1, 2], ArtifactDigest.of(lie).raw, len(lie)
    )
    response = env.client.post("/v1/transactions", json={"raw": raw_tx}, headers=env.headers(MINER))
    assert response.status_code == 400
    assert "aggregate digest mismatch" in error(response)[1]
    round_ = env.client.get("/v1/rounds/1", headers=env.headers(MINER)).json()
    assert round_["status"] == "open"


def test_malformed_update_is_400_and_not_admitted(env: Env) -> None:
    register_model(env)
    env.send(PUBLISHER, "openRound", "link-quality", 1, 1, 1000)
    junk = b"\x08\x00\x00\x00\x00\x00\x00\x00{}garbage"
    digest = env.upload(TWINS[0], junk)
    raw_tx = env.raw_tx(TWINS[0], "pushUpdate", 1, raw(digest), len(junk), 5, 0, Z32)
    response = env.client.post(
        "/v1/transactions", json={"raw": raw_tx}, headers=env.headers(TWINS[0])
    )
    assert response.status_code == 400
    assert error(response)[1].startswith(f"update {digest}: malformed safetensors:")
    shaped = encode_dense({"dense.weight": model_tensors()["dense.weight"][:2]})
    digest = env.upload(TWINS[0], shaped)
    raw_tx = env.raw_tx(TWINS[0], "pushUpdate", 1, raw(digest), len(shaped), 5, 0, Z32)
    response = env.client.post(
        "/v1/transactions", json={"raw": raw_tx}, headers=env.headers(TWINS[0])
    )
    assert response.status_code == 400
    assert "dense update lacks tensor 'dense.bias'" in error(response)[1]
    assert env.client.get("/v1/rounds/1", headers=env.headers(TWINS[0])).json()["update_ids"] == []


def test_update_to_a_closed_round_is_409(env: Env) -> None:
    base, blobs, samples = open_round_with_updates(env, 1)
    model, hex_digest = aggregate_bytes(base, blobs, samples, "fedavg")
    env.upload(MINER, model)
    env.send(MINER, "closeRound", 1, "fedavg", [1], bytes.fromhex(hex_digest), len(model))
    late = encode_dense(deltas(7))
    digest = env.upload(TWINS[2], late)
    raw_tx = env.raw_tx(TWINS[2], "pushUpdate", 1, raw(digest), len(late), 5, 0, Z32)
    response = env.client.post(
        "/v1/transactions", json={"raw": raw_tx}, headers=env.headers(TWINS[2])
    )
    assert response.status_code == 409
    assert error(response) == ("conflict", "the contract refuses it: round closed")


def test_openapi_docs_and_error_shape(env: Env) -> None:
    schema = env.client.get("/v1/openapi.json")
    assert schema.status_code == 200
    paths = schema.json()["paths"]
    for path in ("/blobs/{digest}", "/transactions", "/models/{name}/versions/{ref}/artifact"):
        assert path in paths
    assert schema.json()["servers"] == [{"url": "/v1"}]  # "try it out" hits /v1/...
    docs = env.client.get("/v1/docs")
    assert docs.status_code == 200 and "/v1/openapi.json" in docs.text
    redirect = env.client.get("/docs", follow_redirects=False)
    assert redirect.status_code == 307 and redirect.headers["location"] == "/v1/docs"
    missing = env.client.get("/v1/nothing-here")
    assert missing.status_code == 404 and error(missing)[0] == "not_found"
    wrong_method = env.client.delete("/v1/models")
    assert wrong_method.status_code == 405 and error(wrong_method)[0] == "method_not_allowed"


@pytest.mark.parametrize("name", ["x" * 65, "%FF", "%ED%B2%80"])
def test_names_the_contract_cannot_hold_are_refused(env: Env, name: str) -> None:
    response = env.client.get(f"/v1/models/{name}", headers=env.headers(AUDITOR))
    assert response.status_code in (400, 404, 422)
