"""fetch_missing: a miner gets an artifact from its peers before voting, whoever lies."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from node.blobs import ArtifactDigest, BlobFetcher, BlobStore, fetch_missing
from node.errors import InvalidInput, NotFound, StorageError
from tests.blobs.helpers import blob_files, temp_files

DATA = os.urandom(200_000)
DIGEST = ArtifactDigest.of(DATA)
CHUNK = 16_384


@pytest.fixture
def store(tmp_path: Path) -> BlobStore:
    return BlobStore(tmp_path / "blobs", max_blob_bytes=1 << 20)


def chunks_of(data: bytes) -> Iterator[bytes]:
    for i in range(0, len(data), CHUNK):
        yield data[i : i + CHUNK]


class Peer:
    """A scripted peer: serves ``data`` (honest or not) and records what it was asked."""

    def __init__(self, data: bytes | None = DATA, *, fail_after: int | None = None) -> None:
        self.data = data
        self.fail_after = fail_after
        self.asked: list[ArtifactDigest] = []
        self.sent = 0
        self.closed = False

    def __call__(self, digest: ArtifactDigest) -> Iterator[bytes]:
        self.asked.append(digest)
        if self.data is None:
            raise NotFound(f"peer does not hold {digest}")
        return self._stream(self.data)

    def _stream(self, data: bytes) -> Iterator[bytes]:
        try:
            for chunk in chunks_of(data):
                if self.fail_after is not None and self.sent >= self.fail_after:
                    raise ConnectionResetError("peer hung up")
                self.sent += len(chunk)
                yield chunk
        finally:
            self.closed = True


def flipped(data: bytes) -> bytes:
    return data[:-1] + bytes([data[-1] ^ 0xFF])


def test_a_lying_peer_is_skipped_for_an_honest_one(store: BlobStore) -> None:
    liar, honest = Peer(flipped(DATA)), Peer()
    assert fetch_missing(store, DIGEST, len(DATA), [liar, honest], deadline_seconds=10)
    assert liar.asked == [DIGEST] and honest.asked == [DIGEST]
    assert store.verify(DIGEST)
    assert blob_files(store.root) == [store.path(DIGEST)]
    assert temp_files(store.root) == []


def test_a_lying_peer_is_caught_without_a_size(store: BlobStore) -> None:
    assert fetch_missing(store, DIGEST, None, [Peer(DATA[:-1]), Peer()], deadline_seconds=10)
    assert store.verify(DIGEST)


def test_an_oversending_peer_is_cut_off_at_the_declared_size(store: BlobStore) -> None:
    flood = Peer(DATA + os.urandom(500_000))
    assert not fetch_missing(store, DIGEST, len(DATA), [flood], deadline_seconds=10)
    assert flood.sent <= len(DATA) + CHUNK
    assert flood.closed  # its stream (its connection) was released
    assert blob_files(store.root) == [] and temp_files(store.root) == []


def test_failing_and_empty_handed_peers_are_skipped(store: BlobStore) -> None:
    peers: list[BlobFetcher] = [Peer(None), Peer(fail_after=3 * CHUNK), Peer()]
    assert fetch_missing(store, DIGEST, len(DATA), peers, deadline_seconds=10)
    assert store.verify(DIGEST) and temp_files(store.root) == []


def test_nothing_is_stored_when_every_peer_fails(store: BlobStore) -> None:
    peers: list[BlobFetcher] = [Peer(flipped(DATA)), Peer(None), Peer(fail_after=0)]
    assert not fetch_missing(store, DIGEST, len(DATA), peers, deadline_seconds=10)
    assert not fetch_missing(store, DIGEST, len(DATA), [], deadline_seconds=10)
    assert blob_files(store.root) == [] and temp_files(store.root) == []


def test_a_stored_blob_needs_no_peer(store: BlobStore) -> None:
    store.put_bytes(DATA)
    peer = Peer()
    assert fetch_missing(store, DIGEST, len(DATA), [peer], deadline_seconds=0)
    assert peer.asked == []


def test_the_deadline_stops_a_slow_peer_and_the_rest(store: BlobStore) -> None:
    def slow(digest: ArtifactDigest) -> Iterator[bytes]:
        for chunk in chunks_of(DATA):
            time.sleep(0.02)
            yield chunk

    later = Peer()
    started = time.monotonic()
    assert not fetch_missing(store, DIGEST, len(DATA), [slow, later], deadline_seconds=0.1)
    assert time.monotonic() - started < 1.0
    assert later.asked == []
    assert blob_files(store.root) == [] and temp_files(store.root) == []


def test_our_own_storage_failure_is_not_blamed_on_peers(store: BlobStore) -> None:
    shutil.rmtree(store.root / "tmp")
    second = Peer()
    with pytest.raises(StorageError, match="cannot create blob temp file"):
        fetch_missing(store, DIGEST, len(DATA), [Peer(), second], deadline_seconds=10)
    assert second.asked == []


def test_a_stored_copy_of_the_wrong_size_is_refetched(store: BlobStore) -> None:
    store.put_bytes(DATA)
    path = store.path(DIGEST)
    path.chmod(0o644)
    path.write_bytes(DATA[:1000])  # truncated on disk
    assert fetch_missing(store, DIGEST, len(DATA), [Peer()], deadline_seconds=10)
    assert store.verify(DIGEST)


def test_a_size_contradicting_the_digest_is_never_confirmed(store: BlobStore) -> None:
    store.put_bytes(DATA)
    honest = Peer()
    assert not fetch_missing(store, DIGEST, len(DATA) + 1, [honest], deadline_seconds=10)
    assert honest.asked == [DIGEST]
    assert store.verify(DIGEST)  # the good copy is untouched


@pytest.mark.parametrize("size", [-1, (1 << 20) + 1])
def test_an_impossible_size_is_refused_before_asking_peers(store: BlobStore, size: int) -> None:
    peer = Peer()
    with pytest.raises(InvalidInput, match="outside"):
        fetch_missing(store, DIGEST, size, [peer], deadline_seconds=10)
    assert peer.asked == []
