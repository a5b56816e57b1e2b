"""A blob altered on disk is detected and never served as valid."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from node.blobs import BlobStore
from node.errors import StorageError
from tests.blobs.helpers import flip_byte

CHUNK = 4096


@pytest.fixture
def store(tmp_path: Path) -> BlobStore:
    return BlobStore(tmp_path / "blobs", max_blob_bytes=1 << 20)


@pytest.mark.parametrize("offset", [0, 5 * CHUNK + 17, 10 * CHUNK - 1])
def test_flipped_byte_fails_verify_and_never_completes_a_download(
    store: BlobStore, offset: int
) -> None:
    data = os.urandom(10 * CHUNK)
    digest = store.put_bytes(data).digest
    flip_byte(store, digest, offset)

    assert store.verify(digest) is False
    received = bytearray()
    with pytest.raises(StorageError, match=f"blob {digest} is corrupt on disk"):
        for chunk in store.open_verified(digest, chunk_size=CHUNK):
            received += chunk
    # Everything but the held-back last chunk may have gone out; never all of it.
    assert len(received) == len(data) - CHUNK


def test_corrupt_single_chunk_blob_yields_nothing(store: BlobStore) -> None:
    digest = store.put_bytes(b"tiny model").digest
    flip_byte(store, digest, 3)
    chunks = store.open_verified(digest)
    with pytest.raises(StorageError, match="corrupt on disk"):
        next(chunks)


@pytest.mark.parametrize("damage", ["truncate", "extend", "replace"])
def test_resized_or_replaced_blob_is_detected(store: BlobStore, damage: str) -> None:
    data = os.urandom(3 * CHUNK + 1)
    digest = store.put_bytes(data).digest
    path = store.path(digest)
    path.chmod(0o644)
    if damage == "truncate":
        path.write_bytes(data[:-1])
    elif damage == "extend":
        path.write_bytes(data + b"\x00")
    else:
        path.unlink()
        path.write_bytes(os.urandom(len(data)))
    assert store.verify(digest) is False
    with pytest.raises(StorageError, match="corrupt on disk"):
        b"".join(store.open_verified(digest, chunk_size=CHUNK))


def test_intact_blob_streams_whole_with_chunk_boundaries_at_the_end(store: BlobStore) -> None:
    data = os.urandom(4 * CHUNK)  # the size is an exact multiple of the chunk size
    digest = store.put_bytes(data).digest
    chunks = list(store.open_verified(digest, chunk_size=CHUNK))
    assert [len(c) for c in chunks] == [CHUNK] * 4
    assert b"".join(chunks) == data
