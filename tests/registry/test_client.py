"""The twin SDK against a node served like a miner (JSON-RPC + /v1) over real HTTP."""

from __future__ import annotations

import json
import os
from pathlib import Path

import httpx
import numpy as np
import pytest
from eth_account import Account

from node.blobs import ArtifactDigest
from node.errors import Conflict, Forbidden, NotFound
from registry.client import ArtifactMismatch, RemoteError, TwinClient
from registry.fl import aggregate_bytes, save_model
from tests.registry.conftest import MINER, PUBLISHER, TWINS, Live, model_tensors


def client(live: Live, account: object, cache: Path, **kwargs: object) -> TwinClient:
    return TwinClient.from_key(live.url, account.private, cache_dir=cache, **kwargs)  # type: ignore[attr-defined]


@pytest.fixture
def model_file(tmp_path: Path) -> Path:
    path = tmp_path / "model.safetensors"
    path.write_bytes(save_model(model_tensors(3)))
    return path


def _tamper(path: Path) -> None:
    os.chmod(path, 0o644)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_keystore_sign_in_and_model_round_trip(
    live: Live, tmp_path: Path, model_file: Path
) -> None:
    keystore = tmp_path / "publisher.json"
    keystore.write_text(
        json.dumps(Account.encrypt(PUBLISHER.private, "pw", kdf="pbkdf2", iterations=2))
    )
    seen: list[tuple[str, int, int]] = []
    publisher = TwinClient(
        live.url, keystore, "pw", cache_dir=tmp_path / "cache", progress=lambda *a: seen.append(a)
    )
    csv = tmp_path / "channels.csv"
    csv.write_text("rssi,snr\n-70,12\n")
    dataset = publisher.register_dataset("channels", csv, media_type="text/csv")
    assert dataset.version == 1 and dataset.proof is not None
    version = publisher.register_model(
        "link-quality", model_file, datasets=["channels@1"], alias="production"
    )
    assert version.aliases == ("production",) and version.datasets == (dataset.id,)
    assert version.proof is not None and version.proof.registrant == PUBLISHER.lower
    assert seen and seen[-1][1] == seen[-1][2]

    twin = client(live, TWINS[0], tmp_path / "twin-cache")
    path = twin.warm_start("link-quality")
    assert path.read_bytes() == model_file.read_bytes()
    assert path.name == ArtifactDigest.of(model_file.read_bytes()).hex
    tensors = twin.load_tensors(path)
    np.testing.assert_array_equal(tensors["dense.bias"], model_tensors(3)["dense.bias"])
    downloads: list[object] = []
    twin.progress = lambda *a: downloads.append(a)
    assert twin.warm_start("link-quality", "latest") == path
    assert downloads == []  # served from the cache
    assert twin.pull_dataset("channels").read_text() == "rssi,snr\n-70,12\n"


def test_tampered_cache_file_is_refused_and_fetched_again(
    live: Live, tmp_path: Path, model_file: Path
) -> None:
    client(live, PUBLISHER, tmp_path / "p").register_model("m", model_file, alias="production")
    twin = client(live, TWINS[0], tmp_path / "cache")
    path = twin.warm_start("m")
    _tamper(path)
    again = twin.warm_start("m")
    assert again.read_bytes() == model_file.read_bytes()


def test_blob_modified_on_the_server_is_never_accepted(
    live: Live, tmp_path: Path, model_file: Path
) -> None:
    client(live, PUBLISHER, tmp_path / "p").register_model("m", model_file, alias="production")
    digest = ArtifactDigest.of(model_file.read_bytes())
    _tamper(live.blobs.path(digest))
    twin = client(live, TWINS[0], tmp_path / "cache")
    with pytest.raises(RemoteError, match="corrupt on disk"):
        twin.warm_start("m")
    assert not (tmp_path / "cache" / "sha256" / digest.hex).exists()


def test_sdk_refuses_bytes_that_do_not_match_the_chain(tmp_path: Path) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/auth/challenge":
            return httpx.Response(200, json={"message": "sign me"})
        if request.url.path == "/v1/auth/token":
            return httpx.Response(200, json={"token": "t", "expires_at": 0})
        return httpx.Response(200, content=b"not the model")  # a lying server

    twin = TwinClient.from_key(
        "http://lying",
        TWINS[0].private,
        cache_dir=tmp_path,
        http=httpx.Client(transport=httpx.MockTransport(handler)),
    )
    claimed = ArtifactDigest.of(b"the real model")
    with pytest.raises(ArtifactMismatch, match="but the chain records"):
        twin.download(claimed, len(b"not the model"))
    assert list((tmp_path / "sha256").iterdir()) == []


def test_partial_download_resumes_and_a_bad_partial_is_refetched(
    live: Live, tmp_path: Path, model_file: Path
) -> None:
    client(live, PUBLISHER, tmp_path / "p").register_model("m", model_file, alias="production")
    data = model_file.read_bytes()
    digest = ArtifactDigest.of(data)
    cache = tmp_path / "cache"
    part = cache / "sha256" / f"{digest.hex}.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(data[:100])
    twin = client(live, TWINS[0], cache)
    got: list[tuple[str, int, int]] = []
    twin.progress = lambda *a: got.append(a)
    assert twin.warm_start("m").read_bytes() == data
    assert got[0][1] > 100  # the first 100 bytes were not fetched again
    assert not part.exists()
    (cache / "sha256" / digest.hex).unlink()
    part.write_bytes(b"\0" * 100)  # a corrupt partial copy
    assert twin.warm_start("m").read_bytes() == data


def test_federated_round_through_the_sdk(live: Live, tmp_path: Path, model_file: Path) -> None:
    publisher = client(live, PUBLISHER, tmp_path / "p")
    base = publisher.register_model("m", model_file, alias="production")
    opened = publisher.open_round("m", "production", min_updates=2, deadline_blocks=50)
    assert opened.status == "open" and opened.base_version == base.id
    base_tensors = model_tensors(3)
    pushed = []
    for i, twin_key in enumerate(TWINS[:2]):
        twin = client(live, twin_key, tmp_path / f"t{i}")
        weights = twin.load_tensors(twin.warm_start("m"))
        trained = {k: v + np.float32(0.01 * (i + 1)) for k, v in weights.items()}
        pushed.append(
            twin.push_update(
                opened.id, trained, samples=10 * (i + 1), base=weights, sparse_k=3 if i else None
            )
        )
    assert [u.kind for u in pushed] == ["dense", "sparse"]
    assert publisher.round_status(opened.id).update_ids == (1, 2)
    miner = client(live, MINER, tmp_path / "miner")
    result = miner.close_round(opened.id, "fedavg")
    assert result.round_id == opened.id and result.parents == (base.id,)
    status = publisher.round_status(opened.id)
    assert status.status == "closed" and status.result_version == result.id
    # the recorded aggregate is what anyone recomputes from the chain's update blobs
    blobs = [live.blobs.path(u.digest).read_bytes() for u in pushed]
    _, expected = aggregate_bytes(save_model(base_tensors), blobs, [10, 20], "fedavg")
    assert result.digest.hex == expected


def test_errors_are_typed(live: Live, tmp_path: Path, model_file: Path) -> None:
    publisher = client(live, PUBLISHER, tmp_path / "p")
    twin = client(live, TWINS[0], tmp_path / "t")
    with pytest.raises(NotFound, match="model 'nope' has no alias 'production'"):
        twin.warm_start("nope")
    with pytest.raises(Forbidden, match="not a PUBLISHER"):
        twin.register_model("m", model_file)
    publisher.register_model("m", model_file)
    with pytest.raises(Conflict, match="digest already registered"):
        publisher.register_model("m2", model_file)
    opened = publisher.open_round("m", 1, min_updates=1, deadline_blocks=50)
    twin.push_update(opened.id, {k: v * 0.1 for k, v in model_tensors().items()}, samples=1)
    client(live, MINER, tmp_path / "m").close_round(opened.id)
    late = client(live, TWINS[1], tmp_path / "t1")
    with pytest.raises(Conflict, match="round closed"):
        late.push_update(opened.id, {k: v * 0 for k, v in model_tensors().items()}, samples=1)


def test_alias_and_revoke(live: Live, tmp_path: Path, model_file: Path) -> None:
    publisher = client(live, PUBLISHER, tmp_path / "p")
    v1 = publisher.register_model("m", model_file)
    other = tmp_path / "v2.safetensors"
    other.write_bytes(save_model(model_tensors(9)))
    v2 = publisher.register_model("m", other, parents=["m@1"])
    assert v2.parents == (v1.id,)
    assert publisher.set_alias("m", "production", 2).aliases == ("production",)
    revoked = publisher.revoke("m", 2, "poisoned")
    assert revoked.status == "revoked" and revoked.aliases == ()
    twin = client(live, TWINS[0], tmp_path / "t")
    assert twin.warm_start("m", "latest").read_bytes() == model_file.read_bytes()
    with pytest.raises(Conflict, match="revoked"):
        twin.warm_start("m", 2)
