"""Concurrent writers of one digest, and writers killed mid-write."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from node.blobs import ArtifactDigest, BlobStore, StoredBlob
from tests.blobs import crash_child
from tests.blobs.helpers import blob_files, temp_files

ROOT_DIR = Path(__file__).resolve().parents[2]
WRITERS = 8
SEED = 20260102


def test_concurrent_writers_of_one_blob_end_with_one_valid_file(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "blobs", max_blob_bytes=1 << 24)
    data = os.urandom(4 << 20)
    digest = ArtifactDigest.of(data)
    start = threading.Barrier(WRITERS + 1)
    results: list[StoredBlob] = []
    errors: list[BaseException] = []
    reads: list[bytes] = []
    stop = threading.Event()

    def write() -> None:
        try:
            start.wait()
            with store.writer(digest, len(data)) as writer:
                for i in range(0, len(data), 256 << 10):
                    writer.write(data[i : i + (256 << 10)])
                results.append(writer.commit())
        except BaseException as exc:
            errors.append(exc)

    def read() -> None:
        # Whoever wins, a reader sees either no blob or the whole verified blob.
        start.wait()
        while not stop.is_set():
            if store.has(digest):
                reads.append(b"".join(store.open_verified(digest)))

    threads = [threading.Thread(target=write) for _ in range(WRITERS)]
    reader = threading.Thread(target=read)
    for t in [*threads, reader]:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    reader.join()

    assert errors == []
    assert results == [StoredBlob(digest, len(data))] * WRITERS
    assert blob_files(store.root) == [store.path(digest)]
    assert temp_files(store.root) == []
    assert store.verify(digest)
    assert all(r == data for r in reads)


def _spawn_writer(root: Path, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.blobs.crash_child", str(root), *args],
        cwd=ROOT_DIR,
        stdout=subprocess.PIPE,
    )


def _kill(child: subprocess.Popen[bytes]) -> list[str]:
    child.send_signal(signal.SIGKILL)
    out, _ = child.communicate(timeout=30)
    assert child.returncode == -signal.SIGKILL, "child died before it was killed"
    return out.decode().splitlines()


def _reported_commits(lines: list[str]) -> set[str]:
    """Digests the child reported committed (a torn last line is ignored)."""
    parts = [line.split() for line in lines]
    return {p[1] for p in parts if len(p) == 2 and p[0] == "committed" and len(p[1]) == 71}


def test_writer_killed_mid_write_leaves_no_visible_blob_and_its_temp_is_cleaned(
    tmp_path: Path,
) -> None:
    root = tmp_path / "blobs"
    child = _spawn_writer(root, "one-big")
    assert child.stdout is not None
    for _ in range(3):  # three 1 MiB chunks of a 64 MiB blob are on disk
        assert child.stdout.readline().startswith(b"wrote ")
    _kill(child)

    store = BlobStore(root, max_blob_bytes=crash_child.MAX_BLOB)
    assert store.list() == [] and blob_files(root) == []
    [temp] = temp_files(root)  # a young temp may be a live writer's: kept
    assert temp.stat().st_size >= 3 << 20
    an_hour_ago = time.time() - 3601
    os.utime(temp, (an_hour_ago, an_hour_ago))
    BlobStore(root, max_blob_bytes=crash_child.MAX_BLOB)
    assert temp_files(root) == []


def test_writers_killed_at_random_instants_never_expose_a_partial_blob(tmp_path: Path) -> None:
    root = tmp_path / "blobs"
    rng = random.Random(SEED)
    committed: set[str] = set()
    for kill in range(6):
        child = _spawn_writer(root, "many", str(rng.randrange(1 << 30)))
        assert child.stdout is not None
        lines = [child.stdout.readline().decode()]
        assert lines == ["ready\n"]
        if kill % 2:  # every other kill lands after at least one commit, however slow the box
            lines.append(child.stdout.readline().decode())
        time.sleep(rng.uniform(0.0, 0.15))
        lines += _kill(child)
        committed.update(_reported_commits(lines))
        store = BlobStore(root, max_blob_bytes=crash_child.MAX_BLOB, stale_temp_seconds=0)
        assert temp_files(root) == []
        stored = {str(d) for d in store}
        assert committed <= stored  # reported durable, so present
        assert all(store.verify(d) for d in store)  # and nothing visible is partial
    assert committed
