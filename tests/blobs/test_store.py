"""BlobStore: atomic streaming writes, dedup, rejections that leave nothing, reads."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import pytest

from node.blobs import ArtifactDigest, BlobStore, BlobStoreStats, StoredBlob
from node.errors import InvalidInput, NotFound
from tests.blobs.helpers import blob_files, temp_files

LIMIT = 1 << 20


@pytest.fixture
def store(tmp_path: Path) -> BlobStore:
    return BlobStore(tmp_path / "blobs", max_blob_bytes=LIMIT)


def test_round_trip_stores_under_fanned_out_digest(store: BlobStore) -> None:
    data = os.urandom(300_000)
    stored = store.put_bytes(data)
    digest = ArtifactDigest.of(data)
    assert stored == StoredBlob(digest, len(data))
    assert store.path(digest) == store.root / "sha256" / digest.hex[:2] / digest.hex[2:]
    assert store.has(digest) and digest in store
    assert store.size(digest) == len(data)
    with store.open(digest) as f:
        assert f.read() == data
    assert b"".join(store.open_verified(digest, chunk_size=4096)) == data
    assert store.verify(digest)
    assert stat.S_IMODE(store.path(digest).stat().st_mode) == 0o444
    assert temp_files(store.root) == []


def test_streamed_chunks_equal_one_put(store: BlobStore) -> None:
    data = os.urandom(100_000)
    with store.writer(ArtifactDigest.of(data), len(data)) as writer:
        for i in range(0, len(data), 7_777):
            writer.write(memoryview(data)[i : i + 7_777])
        assert writer.size == len(data)
        stored = writer.commit()
    assert stored == StoredBlob(ArtifactDigest.of(data), len(data))
    assert b"".join(store.read_range(stored.digest, 0, len(data))) == data


def test_empty_blob_is_a_blob(store: BlobStore) -> None:
    stored = store.put_bytes(b"")
    assert stored.size == 0 and store.verify(stored.digest)
    assert list(store.open_verified(stored.digest)) == []


def test_same_bytes_are_stored_once(store: BlobStore) -> None:
    first = store.put_bytes(b"weights")
    inode = store.path(first.digest).stat().st_ino
    second = store.put_bytes(b"weights", expected=first.digest)
    assert second == first
    assert store.path(first.digest).stat().st_ino == inode  # the second copy was dropped
    assert blob_files(store.root) == [store.path(first.digest)]
    assert temp_files(store.root) == []


def test_a_stored_copy_of_the_wrong_size_is_healed_by_the_next_put(store: BlobStore) -> None:
    stored = store.put_bytes(b"complete weights")
    path = store.path(stored.digest)
    path.chmod(0o644)
    path.write_bytes(b"complete")  # truncated behind our back
    assert not store.verify(stored.digest)
    assert store.put_bytes(b"complete weights") == stored
    assert store.verify(stored.digest)


def test_digest_mismatch_leaves_nothing(store: BlobStore) -> None:
    wrong = ArtifactDigest.of(b"what the chain says")
    with pytest.raises(InvalidInput, match=f"digest mismatch: expected {wrong}, got sha256:"):
        store.put_bytes(b"what the peer sent", expected=wrong)
    assert not store.has(wrong)
    assert blob_files(store.root) == []
    assert temp_files(store.root) == []


def test_oversized_stream_is_cut_off_midway_and_leaves_nothing(store: BlobStore) -> None:
    writer = store.writer()
    chunk = b"\x00" * (LIMIT // 4)
    for _ in range(4):
        writer.write(chunk)  # exactly at the limit: fine
    assert len(temp_files(store.root)) == 1
    with pytest.raises(InvalidInput, match=f"blob exceeds {LIMIT} bytes"):
        writer.write(b"\x00")
    assert temp_files(store.root) == []
    assert blob_files(store.root) == []
    with pytest.raises(ValueError, match="already committed or aborted"):
        writer.commit()


def test_declared_size_over_the_limit_is_refused_before_any_byte(store: BlobStore) -> None:
    with pytest.raises(InvalidInput, match=f"blob exceeds {LIMIT} bytes"):
        store.writer(None, LIMIT + 1)
    with pytest.raises(InvalidInput, match="negative"):
        store.writer(None, -1)
    assert temp_files(store.root) == []


def test_stream_shorter_than_declared_is_refused(store: BlobStore) -> None:
    with store.writer(None, 10) as writer:
        writer.write(b"123456789")
        with pytest.raises(InvalidInput, match="size mismatch: declared 10, got 9"):
            writer.commit()
    assert blob_files(store.root) == [] and temp_files(store.root) == []


def test_stream_longer_than_declared_is_cut_off_at_once(store: BlobStore) -> None:
    with store.writer(None, 10) as writer:
        writer.write(b"1234567890")
        with pytest.raises(InvalidInput, match="larger than its declared size of 10"):
            writer.write(b"1")
    assert blob_files(store.root) == [] and temp_files(store.root) == []


def test_exception_inside_the_writer_block_aborts(store: BlobStore) -> None:
    with pytest.raises(ConnectionResetError), store.writer() as writer:
        writer.write(b"partial upload")
        raise ConnectionResetError("client went away")
    assert blob_files(store.root) == [] and temp_files(store.root) == []


def test_a_block_that_never_commits_aborts(store: BlobStore) -> None:
    with store.writer() as writer:
        writer.write(b"forgotten")
    assert blob_files(store.root) == [] and temp_files(store.root) == []
    writer.abort()  # idempotent


def test_put_file_streams_a_file(store: BlobStore, tmp_path: Path) -> None:
    src = tmp_path / "model.safetensors"
    data = os.urandom(LIMIT - 5)
    src.write_bytes(data)
    assert store.put_file(src, ArtifactDigest.of(data)) == StoredBlob(
        ArtifactDigest.of(data), len(data)
    )
    with pytest.raises(InvalidInput, match="digest mismatch"):
        store.put_file(src, ArtifactDigest.of(b"other"))


def test_missing_blob_reads_raise_not_found(store: BlobStore) -> None:
    absent = ArtifactDigest.of(b"absent")
    assert not store.has(absent) and store.size(absent) is None
    for read in (
        store.open,
        store.verify,
        store.open_verified,
        lambda d: store.read_range(d, 0, 0),
    ):
        with pytest.raises(NotFound, match=str(absent)):
            read(absent)
    assert store.delete(absent) is False


def test_list_stats_and_delete(store: BlobStore) -> None:
    stored = [store.put_bytes(bytes([i]) * (i + 1)) for i in range(20)]
    stray = store.root / "sha256" / "zz"
    stray.mkdir()
    (stray / "not-a-blob").write_bytes(b"x")  # ignored
    (store.root / "sha256" / "README").write_bytes(b"x")  # ignored
    assert store.list() == sorted((s.digest for s in stored), key=lambda d: d.raw)
    assert set(store) == {s.digest for s in stored}
    assert store.stats() == BlobStoreStats(20, sum(range(1, 21)))
    assert store.delete(stored[0].digest) is True
    assert not store.has(stored[0].digest)
    assert store.stats() == BlobStoreStats(19, sum(range(2, 21)))


def test_reopening_keeps_blobs_and_fresh_temps_but_cleans_stale_temps(tmp_path: Path) -> None:
    root = tmp_path / "blobs"
    store = BlobStore(root, max_blob_bytes=LIMIT)
    kept = store.put_bytes(b"kept")
    live = store.writer()
    live.write(b"still uploading")  # another writer, maybe in another process
    stale = root / "tmp" / "1234-deadbeef.part"
    stale.write_bytes(b"left by a crash")
    two_hours_ago = time.time() - 7200
    os.utime(stale, (two_hours_ago, two_hours_ago))

    reopened = BlobStore(root, max_blob_bytes=LIMIT)
    assert reopened.list() == [kept.digest]
    assert temp_files(root) == [live.temp_path]
    live.write(b"...done")
    assert reopened.has(live.commit().digest)
    assert temp_files(root) == []


# -- range reads ---------------------------------------------------------------------------

DATA = bytes(range(10))


@pytest.mark.parametrize(
    ("start", "end", "chunks"),
    [
        (0, 10, [b"\x00\x01\x02", b"\x03\x04\x05", b"\x06\x07\x08", b"\x09"]),
        (0, 0, []),  # empty range at the start
        (10, 10, []),  # empty range at the very end
        (9, 10, [b"\x09"]),  # the last byte
        (0, 1, [b"\x00"]),  # the first byte
        (2, 8, [b"\x02\x03\x04", b"\x05\x06\x07"]),
    ],
)
def test_range_reads_are_half_open_and_chunked(
    store: BlobStore, start: int, end: int, chunks: list[bytes]
) -> None:
    digest = store.put_bytes(DATA).digest
    assert list(store.read_range(digest, start, end, chunk_size=3)) == chunks


@pytest.mark.parametrize(("start", "end"), [(0, 11), (10, 11), (11, 11), (5, 4), (-1, 3)])
def test_range_outside_the_blob_is_refused_when_asked(
    store: BlobStore, start: int, end: int
) -> None:
    digest = store.put_bytes(DATA).digest
    with pytest.raises(InvalidInput, match="outside blob"):
        store.read_range(digest, start, end)  # refused before any iteration


def test_a_fan_out_directory_removed_by_hand_is_recreated(store: BlobStore) -> None:
    stored = store.put_bytes(b"model")
    store.delete(stored.digest)
    store.path(stored.digest).parent.rmdir()
    assert store.put_bytes(b"model") == stored
    assert store.verify(stored.digest)
