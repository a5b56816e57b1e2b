"""Artifact replication on a real 4-miner PBFT network.

A model artifact is uploaded to one miner only; the others fetch it from their peers
over the transport before they vote for the block that registers it
(``node/daemon.py``: ``fetch_artifacts``). These tests check what that buys a twin:
any miner serves every committed artifact, verified by the SDK against the digest the
chain records; a stopped miner takes nothing away; a blob corrupted on one miner's disk
is never served as valid, and the others still serve the good copy.

One network per module (about a minute all told).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from node.blobs import ArtifactDigest
from node.errors import TwinChainError
from node.pki import load_keystore, read_password
from registry.client import ModelVersion, TwinClient
from tests.network.harness import Network, running_network

pytestmark = pytest.mark.timeout(300)

QUORUM = 3  # of 4 PBFT miners


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Network]:
    with running_network(tmp_path_factory.mktemp("replication") / "net", nodes=4) as network:
        yield network


def _client(net: Network, miner: int, cache: Path, account: str = "publisher-0") -> TwinClient:
    info = next(a for a in net.layout.accounts if a.name == account)
    key = load_keystore(info.keystore, read_password(info.password_file, None))
    return TwinClient.from_key(net.url(miner), key, cache_dir=cache / f"{account}@{miner}")


def _blob_path(net: Network, miner: int, digest: ArtifactDigest) -> Path:
    hex_ = digest.hex
    return net.layout.miners[miner].data_dir / "blobs" / "sha256" / hex_[:2] / hex_[2:]


def _holders(net: Network, digest: ArtifactDigest, size: int) -> list[int]:
    """Miners whose blob store holds a complete file for ``digest``."""
    held = []
    for i in range(len(net.layout.miners)):
        path = _blob_path(net, i, digest)
        if path.is_file() and path.stat().st_size == size:
            held.append(i)
    return held


def _head_status(net: Network, miner: int, digest: ArtifactDigest) -> int:
    r = httpx.head(
        f"{net.url(miner)}/v1/blobs/{digest}",
        headers={"Authorization": f"Bearer {net.token(miner, 'auditor-0')}"},
        timeout=10,
    )
    return r.status_code


def _register(net: Network, tmp: Path, name: str, size: int, miner: int = 0) -> ModelVersion:
    """Register ``size`` random bytes as a model through miner ``miner`` only; wait until
    every running miner has committed the block."""
    weights = tmp / f"{name}.bin"
    weights.write_bytes(os.urandom(size))
    with _client(net, miner, tmp / "cache") as publisher:
        version = publisher.register_model(name, weights)
        height = publisher.head()
    assert version.digest == ArtifactDigest.of(weights.read_bytes())
    net.wait_height(height, timeout=60)
    return version


def _sha(path: Path) -> ArtifactDigest:
    return ArtifactDigest(hashlib.sha256(path.read_bytes()).digest())


def test_model_uploaded_to_one_miner_is_committed_held_by_a_quorum_and_served_verified_by_another(
    net: Network, tmp_path: Path
) -> None:
    size = 9 * 1024 * 1024 + 123  # several transport chunks (4 MiB), not a multiple
    version = _register(net, tmp_path, "replicated-model", size)
    # as soon as the registration is committed everywhere, a quorum already holds the
    # bytes: miners fetch a proposal's artifacts before voting for it
    holders = _holders(net, version.digest, size)
    assert len(holders) >= QUORUM, holders
    assert 0 in holders
    for i in holders:
        assert _sha(_blob_path(net, i, version.digest)) == version.digest
        assert _head_status(net, i, version.digest) == 200
    # a twin on another miner warm-starts from it, verified against the chain
    with _client(net, 2, tmp_path / "cache", account="twin-0") as twin:
        path = twin.warm_start("replicated-model", version.version)
    assert path.stat().st_size == size
    assert _sha(path) == version.digest
    # and in the end every miner holds it
    net.wait_for(
        "every miner holds the artifact",
        lambda: len(_holders(net, version.digest, size)) == 4,
        timeout=30,
    )


def test_committed_artifacts_stay_served_verified_with_one_miner_stopped(
    net: Network, tmp_path: Path
) -> None:
    before = _register(net, tmp_path, "before-stop", 2 * 1024 * 1024)
    net.wait_for(
        "every miner holds the artifact",
        lambda: len(_holders(net, before.digest, before.size)) == 4,
        timeout=30,
    )
    stopped = 3
    net.stop(stopped)
    try:
        # 3 of 4 is still a quorum: registering goes on, through miner 1 this time
        during = _register(net, tmp_path, "during-stop", 3 * 1024 * 1024, miner=1)
        for miner in (0, 1, 2):
            with _client(net, miner, tmp_path / "cache", account="twin-1") as twin:
                for version in (before, during):
                    path = twin.warm_start(version.name, version.version)
                    assert _sha(path) == version.digest, (miner, version.name)
    finally:
        net.start(stopped)
        net.wait_height(max(net.heights([0, 1, 2]).values()), timeout=90)


@pytest.mark.parametrize(
    "size",
    [
        pytest.param(1024 * 1024, id="verified-before-sending"),
        # over the API's verify_first_bytes (64 MiB): streamed, last chunk withheld
        pytest.param(65 * 1024 * 1024, id="verified-while-streaming"),
    ],
)
def test_blob_corrupted_on_one_miner_disk_is_never_served_complete_and_others_serve_it(
    net: Network, tmp_path: Path, size: int
) -> None:
    name = f"corrupted-{size}"
    version = _register(net, tmp_path, name, size)
    net.wait_for(
        "every miner holds the artifact",
        lambda: len(_holders(net, version.digest, size)) == 4,
        timeout=60,
    )
    bad = 1
    path = _blob_path(net, bad, version.digest)
    path.chmod(0o644)  # stored blobs are read-only
    with path.open("r+b") as f:  # same size, one byte flipped in the middle
        f.seek(size // 2)
        byte = f.read(1)
        f.seek(size // 2)
        f.write(bytes([byte[0] ^ 0xFF]))
    assert path.stat().st_size == size

    # the raw API never delivers a complete body: a 500 before any byte, or a body
    # that breaks off before its Content-Length
    url = f"{net.url(bad)}/v1/blobs/{version.digest}"
    headers = {"Authorization": f"Bearer {net.token(bad, 'auditor-0')}"}
    received = hashlib.sha256()
    got, status, broke_off = 0, 0, False
    try:
        with httpx.stream("GET", url, headers=headers, timeout=30) as response:
            status = response.status_code
            if status == 200:
                for chunk in response.iter_bytes():
                    received.update(chunk)
                    got += len(chunk)
    except httpx.HTTPError:
        broke_off = True
    if size <= 64 * 1024 * 1024:
        assert status == 500, status
    else:
        assert status in (200, 500), status
        complete = status == 200 and not broke_off and got == size
        assert not complete, "a corrupt blob was served whole"
        assert received.digest() != version.digest.raw or got != size

    # the SDK on that miner refuses it; on another miner it gets the valid artifact
    with _client(net, bad, tmp_path / "cache", account="twin-2") as twin:
        with pytest.raises(TwinChainError):
            twin.warm_start(name, version.version)
        cached = twin.cache_dir / "sha256" / version.digest.hex
        assert not cached.exists()
    with _client(net, 2, tmp_path / "cache", account="twin-2") as twin:
        good = twin.warm_start(name, version.version)
    assert good.stat().st_size == size
    assert _sha(good) == version.digest
