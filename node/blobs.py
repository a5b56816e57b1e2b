"""The miner's content-addressed artifact store.

Theory of operation
-------------------
An artifact (model weights, a dataset, a training update) is named by the SHA-256 of its
bytes, written ``sha256:<64 lowercase hex>`` as in OCI and Hugging Face LFS. Only that
digest and the size go on chain; the bytes live here, one file per digest::

    root/
      sha256/ab/cdef...      the blob whose digest is sha256:abcdef... (fan-out by first byte)
      tmp/<pid>-<random>.part  uploads in progress (never read by anyone)

Invariants:

- **Nothing half-written is ever visible under its final name.** A :class:`BlobWriter`
  streams into a fresh file in ``tmp/``, hashing as it goes; :meth:`BlobWriter.commit`
  fsyncs it, checks the declared size and the expected digest, then ``os.replace``-s it
  into place and fsyncs the fan-out directory. A rejected or aborted upload (too big,
  wrong digest, wrong size, an exception in the ``with`` block) removes its temp file and
  leaves the store untouched. A crash leaves at most a temp file, which the next
  :class:`BlobStore` to open the root removes once it is an hour old (younger ones may
  belong to a live writer in another process).
- **Blobs are immutable and deduplicated.** Committing bytes that are already stored
  drops the new temp file. Concurrent writers of one digest are safe without locks: each
  has its own temp file and ``os.replace`` is atomic, so the final name always holds one
  complete, verified copy.
- **Disk corruption is never served as valid.** :meth:`BlobStore.verify` re-hashes a
  blob; :meth:`BlobStore.open_verified` re-hashes while streaming and holds the last chunk
  back until the digest checks, so a corrupt blob never completes a download.
  :meth:`BlobStore.open` and :meth:`BlobStore.read_range` do *not* verify (a range cannot
  be checked without reading the whole blob); callers that serve them rely on clients
  checking the digest header, and on periodic :meth:`BlobStore.verify` sweeps.
- **Verified at rest, remembered by fingerprint.** Re-hashing a blob on every download
  costs as much CPU as the transfer itself. So once this process has seen a blob's bytes
  hash to its digest (it wrote and verified them in :meth:`BlobWriter.commit`, or
  re-hashed them), it remembers the file's *fingerprint* ``(st_dev, st_ino, st_size,
  st_mtime_ns, st_ctime_ns)``; :meth:`BlobStore.open_blob` trusts a file whose
  fingerprint is unchanged and re-hashes any other. Every change made through the
  filesystem (a write, truncate, chmod, a replacing rename, ``utime`` to hide a write)
  moves ``st_ctime``, which user space cannot set, so a blob modified on disk is re-hashed
  and refused. What a fingerprint cannot see — bit rot below the filesystem, a write by
  someone who also resets the system clock, a modification *during* a send — is caught
  by clients, which verify the SHA-256 of what they receive (the SDK always does), and by
  :meth:`BlobStore.verify` sweeps, which always re-hash.

:func:`fetch_missing` is how a miner obtains an artifact from its peers before voting for
the transaction that registers it; it is transport-agnostic (sources are plain callables).
"""

from __future__ import annotations

import builtins
import contextlib
import hashlib
import logging
import os
import re
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, NamedTuple, Protocol, Self

from node.errors import InvalidInput, NotFound, StorageError, TwinChainError

log = logging.getLogger("twinchain.blobs")

ALGORITHM = "sha256"
#: Bytes read or yielded at a time when streaming a stored blob.
CHUNK_SIZE = 1 << 20
#: Temp files older than this (seconds) are leftovers of a crash and are removed on open.
STALE_TEMP_SECONDS = 3600.0
#: Permissions of a stored blob: blobs are immutable, so nobody opens them for writing.
BLOB_MODE = 0o444
#: How many verified fingerprints a store remembers (least recently used ones are dropped).
MAX_VERIFIED = 65536

#: ``(st_dev, st_ino, st_size, st_mtime_ns, st_ctime_ns)`` of a blob file.
Fingerprint = tuple[int, int, int, int, int]


def fingerprint(st: os.stat_result) -> Fingerprint:
    """The stat fields that change whenever a file's bytes change through the filesystem."""
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


# OCI image-spec: the encoded part of a sha256 digest MUST match [a-f0-9]{64}.
_DIGEST_RE = re.compile(r"sha256:([0-9a-f]{64})")
_TEMP_SUFFIX = ".part"

Chunk = bytes | bytearray | memoryview


@dataclass(frozen=True, slots=True)
class ArtifactDigest:
    """The SHA-256 digest that names an artifact; ``str()`` gives ``sha256:<hex>``."""

    raw: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.raw, bytes) or len(self.raw) != 32:
            raise InvalidInput("an artifact digest is 32 bytes")

    @classmethod
    def of(cls, data: Chunk) -> ArtifactDigest:
        """The digest of ``data``."""
        return cls(hashlib.sha256(data).digest())

    @property
    def hex(self) -> str:
        """The 64 lowercase hex digits (without the ``sha256:`` prefix)."""
        return self.raw.hex()

    def __str__(self) -> str:
        return f"{ALGORITHM}:{self.raw.hex()}"

    def __repr__(self) -> str:
        return f"ArtifactDigest('{self}')"


def parse_digest(text: str) -> ArtifactDigest:
    """Parse the canonical form ``sha256:<64 lowercase hex>``.

    Anything else is :class:`InvalidInput`: other algorithms, a missing prefix,
    surrounding whitespace, and uppercase hex. Uppercase is refused rather than folded
    because the OCI image spec refuses it and because a digest is also an identifier
    (URL path, ETag, log line): one artifact gets exactly one spelling.
    """
    if not isinstance(text, str):
        raise InvalidInput(f"artifact digest must be a string, not {type(text).__name__}")
    match = _DIGEST_RE.fullmatch(text)
    if match is None:
        shown = text if len(text) <= 80 else text[:77] + "..."
        raise InvalidInput(f"invalid artifact digest {shown!r}: expected sha256:<64 lowercase hex>")
    return ArtifactDigest(bytes.fromhex(match.group(1)))


class StoredBlob(NamedTuple):
    """What a commit stored: the blob's digest and size in bytes."""

    digest: ArtifactDigest
    size: int


@dataclass(frozen=True, slots=True)
class BlobStoreStats:
    """How many blobs a store holds and their total size in bytes."""

    count: int
    total_bytes: int


class BlobWriter:
    """One streaming upload into a :class:`BlobStore`; obtain it from :meth:`BlobStore.writer`.

    ``write`` chunks, then ``commit``; or ``abort``. As a context manager it aborts when
    the block raises (and when the block ends without committing). Every rejection
    (:class:`InvalidInput`) and every I/O failure (:class:`StorageError`) removes the temp
    file before raising, so a failed writer leaves nothing behind. Not thread-safe: one
    writer serves one stream.
    """

    def __init__(
        self,
        store: BlobStore,
        expected: ArtifactDigest | None,
        declared_size: int | None,
    ) -> None:
        limit = store.max_blob_bytes
        if declared_size is not None and declared_size < 0:
            raise InvalidInput(f"declared blob size {declared_size} is negative")
        if declared_size is not None and declared_size > limit:
            raise InvalidInput(f"blob exceeds {limit} bytes (declared {declared_size})")
        self._store = store
        self._expected = expected
        self._declared_size = declared_size
        self._hash = hashlib.sha256()
        self._size = 0
        self._closed = False
        self.temp_path = store.root / "tmp" / f"{os.getpid()}-{secrets.token_hex(8)}{_TEMP_SUFFIX}"
        try:
            # A raw descriptor rather than a buffered file: nothing is left to flush (and
            # fail) on abort, and fsync sees every byte written.
            self._fd = os.open(self.temp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError as exc:
            raise StorageError(f"cannot create blob temp file {self.temp_path}: {exc}") from exc

    @property
    def size(self) -> int:
        """Bytes written so far."""
        return self._size

    def write(self, chunk: Chunk) -> None:
        """Hash and append ``chunk``.

        Raises :class:`InvalidInput` (and aborts) as soon as the stream outgrows
        ``max_blob_bytes`` or the declared size, before writing the offending chunk.
        """
        self._check_open()
        new_size = self._size + len(chunk)
        limit = self._store.max_blob_bytes
        if new_size > limit:
            self.abort()
            raise InvalidInput(f"blob exceeds {limit} bytes")
        if self._declared_size is not None and new_size > self._declared_size:
            self.abort()
            raise InvalidInput(f"blob is larger than its declared size of {self._declared_size}")
        self._hash.update(chunk)
        try:
            view = memoryview(chunk).cast("B")
            while view:
                view = view[os.write(self._fd, view) :]
        except OSError as exc:
            self.abort()
            raise StorageError(f"cannot write blob temp file: {exc}") from exc
        self._size = new_size

    def commit(self) -> StoredBlob:
        """Make the blob durable and visible under its digest; return (digest, size).

        Checks, in order, the declared size (``size mismatch``) and the expected digest
        (``digest mismatch``); either failure is :class:`InvalidInput` and removes the
        temp file. If the blob is already stored (same digest and size) the new copy is
        dropped; a stored copy of the wrong size (a damaged file) is replaced.
        """
        self._check_open()
        digest = ArtifactDigest(self._hash.digest())
        if self._declared_size is not None and self._size != self._declared_size:
            self.abort()
            raise InvalidInput(f"size mismatch: declared {self._declared_size}, got {self._size}")
        if self._expected is not None and digest != self._expected:
            self.abort()
            raise InvalidInput(f"digest mismatch: expected {self._expected}, got {digest}")
        fd, self._fd = self._fd, -1
        try:
            try:
                os.fchmod(fd, BLOB_MODE)
                os.fsync(fd)
            finally:
                os.close(fd)
            if self._store._install(self.temp_path, digest, self._size):
                # these very bytes were hashed on the way in: trust the file as it is now
                self._store.remember_verified(digest, self._store.path(digest))
        except OSError as exc:
            self.abort()
            raise StorageError(f"cannot store blob {digest}: {exc}") from exc
        self._closed = True
        return StoredBlob(digest, self._size)

    def abort(self) -> None:
        """Discard the upload and its temp file; harmless after commit or a second abort."""
        if self._closed:
            return
        self._closed = True
        fd, self._fd = self._fd, -1
        try:
            if fd >= 0:
                os.close(fd)
        finally:
            _unlink_quietly(self.temp_path)

    def _check_open(self) -> None:
        if self._closed:
            # Like writing to a closed file: a bug in the caller, not bad input.
            raise ValueError("blob writer is already committed or aborted")

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.abort()


class OpenBlob:
    """A stored blob opened for serving (:meth:`BlobStore.open_blob`).

    ``verified`` is True when its bytes are known to hash to ``digest`` (known-good
    fingerprint, or re-hashed when opened). Reads use ``os.pread`` on the open
    descriptor, so a rename over the blob's name meanwhile does not change what is
    served. The iterators close the file when they end; :meth:`close` is idempotent.
    """

    def __init__(
        self,
        store: BlobStore,
        digest: ArtifactDigest,
        file: BinaryIO,
        print_: Fingerprint,
        verified: bool,
    ) -> None:
        self.store = store
        self.digest = digest
        self.file = file
        self.fingerprint = print_
        self.size = print_[2]
        self.verified = verified

    def close(self) -> None:
        """Close the file."""
        self.file.close()

    def _read(self, offset: int, count: int) -> bytes:
        chunk = os.pread(self.file.fileno(), count, offset)
        if not chunk:
            raise StorageError(f"blob {self.digest} shrank while being read")
        return chunk

    def chunks(self, start: int, end: int, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
        """Bytes ``[start, end)`` as they are on disk (no hashing), then close."""
        try:
            offset = start
            while offset < end:
                chunk = self._read(offset, min(chunk_size, end - offset))
                offset += len(chunk)
                yield chunk
        finally:
            self.close()

    def verified_chunks(self, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
        """The whole blob, re-hashed while streaming; the last chunk is withheld and
        :class:`StorageError` raised instead if it is corrupt (as
        :meth:`BlobStore.open_verified`). A verified stream makes the file trusted."""
        try:
            h = hashlib.sha256()
            offset = 0
            held = self._read(0, chunk_size) if self.size else b""
            offset += len(held)
            while held:
                h.update(held)
                if offset >= self.size:
                    break
                following = self._read(offset, min(chunk_size, self.size - offset))
                offset += len(following)
                yield held
                held = following
            if h.digest() != self.digest.raw or os.pread(self.file.fileno(), 1, offset):
                self.store.forget_verified(self.digest)
                log.error("blob %s is corrupt on disk", self.digest)
                raise StorageError(f"blob {self.digest} is corrupt on disk")
            if fingerprint(os.fstat(self.file.fileno())) == self.fingerprint:
                self.store._remember(self.digest, self.fingerprint)
            if held:
                yield held
        finally:
            self.close()


class BlobStore:
    """A directory of immutable blobs named by their SHA-256 (see the module docstring).

    Safe to share between threads, and between processes on one host; every method that
    takes a digest raises :class:`NotFound` when the blob is absent, except ``has``,
    ``size``, ``path`` and ``delete``.
    """

    def __init__(
        self,
        root: Path,
        *,
        max_blob_bytes: int,
        stale_temp_seconds: float = STALE_TEMP_SECONDS,
    ) -> None:
        if max_blob_bytes < 0:
            raise ValueError("max_blob_bytes must not be negative")
        self.root = Path(root)
        self.max_blob_bytes = max_blob_bytes
        # Fan-out directories this process has made durable (created, or seen, and then
        # fsynced their parent): a commit must not return while the directory it renamed
        # into could still vanish in a crash, even if another thread or process created it.
        self._durable_fan_outs: set[str] = set()
        self._fan_out_lock = threading.Lock()
        # digest -> fingerprint of the file whose bytes this process saw hash to it
        self._verified: OrderedDict[ArtifactDigest, Fingerprint] = OrderedDict()
        self._verified_lock = threading.Lock()
        try:
            (self.root / ALGORITHM).mkdir(parents=True, exist_ok=True)
            (self.root / "tmp").mkdir(exist_ok=True)
            _fsync_dir(self.root)
        except OSError as exc:
            raise StorageError(f"cannot create blob store at {self.root}: {exc}") from exc
        removed = self.clean_temp(older_than=stale_temp_seconds)
        if removed:
            log.info("removed %d stale blob temp file(s) from %s", removed, self.root / "tmp")

    # -- writing ---------------------------------------------------------------------

    def writer(
        self,
        expected: ArtifactDigest | None = None,
        declared_size: int | None = None,
    ) -> BlobWriter:
        """Start a streaming upload; see :class:`BlobWriter`."""
        return BlobWriter(self, expected, declared_size)

    def put_bytes(self, data: Chunk, expected: ArtifactDigest | None = None) -> StoredBlob:
        """Store ``data`` (checked against ``expected`` if given)."""
        with self.writer(expected, len(data)) as writer:
            writer.write(data)
            return writer.commit()

    def put_file(self, path: Path, expected: ArtifactDigest | None = None) -> StoredBlob:
        """Stream the file at ``path`` into the store (checked against ``expected``).

        The file's size when opened is the declared size, so a file that changes while
        it is read is refused rather than stored half-old, half-new.
        """
        with (
            builtins.open(path, "rb") as src,
            self.writer(expected, os.fstat(src.fileno()).st_size) as writer,
        ):
            while chunk := src.read(CHUNK_SIZE):
                writer.write(chunk)
            return writer.commit()

    def _install(self, temp: Path, digest: ArtifactDigest, size: int) -> bool:
        """Move a verified, fsynced temp file to its final name (dedup, then replace);
        True if the temp file became the blob, False if a stored copy was kept."""
        final = self.path(digest)
        fan_out = final.parent
        self._make_durable_dir(fan_out)
        try:
            existing = final.stat().st_size
        except FileNotFoundError:
            existing = None
        if existing == size:
            _unlink_quietly(temp)
            return False
        if existing is not None:
            log.warning(
                "replacing stored blob %s of wrong size %d (want %d)", digest, existing, size
            )
        os.replace(temp, final)
        _fsync_dir(fan_out)
        return True

    def _make_durable_dir(self, fan_out: Path) -> None:
        """Create a fan-out directory if needed and make its entry durable (once)."""
        try:
            fan_out.mkdir()
            created = True
        except FileExistsError:
            created = False
        with self._fan_out_lock:
            if created or fan_out.name not in self._durable_fan_outs:
                _fsync_dir(fan_out.parent)
                self._durable_fan_outs.add(fan_out.name)

    # -- reading ---------------------------------------------------------------------

    def path(self, digest: ArtifactDigest) -> Path:
        """Where the blob ``digest`` lives (or would live)."""
        hex_ = digest.hex
        return self.root / ALGORITHM / hex_[:2] / hex_[2:]

    def has(self, digest: ArtifactDigest) -> bool:
        """Whether the blob is stored (without verifying its content)."""
        return self.path(digest).is_file()

    def __contains__(self, digest: object) -> bool:
        return isinstance(digest, ArtifactDigest) and self.has(digest)

    def size(self, digest: ArtifactDigest) -> int | None:
        """The stored blob's size in bytes, or None if absent."""
        try:
            return self.path(digest).stat().st_size
        except FileNotFoundError:
            return None

    def open(self, digest: ArtifactDigest) -> BinaryIO:
        """Open the stored blob for reading (unverified; see :meth:`open_verified`)."""
        try:
            return builtins.open(self.path(digest), "rb")
        except FileNotFoundError:
            raise NotFound(f"blob {digest} is not stored") from None

    def read_range(
        self,
        digest: ArtifactDigest,
        start: int,
        end: int,
        *,
        chunk_size: int = CHUNK_SIZE,
    ) -> Iterator[bytes]:
        """Stream bytes ``[start, end)`` of a blob in chunks of at most ``chunk_size``.

        The range is half-open, Python style: HTTP's inclusive ``bytes=a-b`` is
        ``read_range(d, a, b + 1)``, and ``start == end`` is an empty range. The range is
        checked when this is called (:class:`InvalidInput` if it does not lie within the
        blob, which HTTP maps to 416; :class:`NotFound` if the blob is absent); the file
        is opened when iteration starts. Range reads are not verified.
        """
        size = self.size(digest)
        if size is None:
            raise NotFound(f"blob {digest} is not stored")
        if not 0 <= start <= end <= size:
            raise InvalidInput(f"range [{start}, {end}) is outside blob {digest} of {size} bytes")
        return self._range_chunks(digest, start, end, chunk_size)

    def _range_chunks(
        self, digest: ArtifactDigest, start: int, end: int, chunk_size: int
    ) -> Iterator[bytes]:
        if start == end:
            return
        with self.open(digest) as f:
            f.seek(start)
            remaining = end - start
            while remaining:
                chunk = f.read(min(chunk_size, remaining))
                if not chunk:
                    raise StorageError(f"blob {digest} shrank while being read")
                remaining -= len(chunk)
                yield chunk

    def verify(self, digest: ArtifactDigest) -> bool:
        """Re-hash the stored blob (always): True if its bytes still match ``digest``.

        The answer also updates what :meth:`open_blob` trusts.
        """
        with self.open(digest) as f:
            return self._rehash(digest, f)

    def _rehash(self, digest: ArtifactDigest, f: BinaryIO) -> bool:
        before = fingerprint(os.fstat(f.fileno()))
        h = hashlib.sha256()
        f.seek(0)
        while chunk := f.read(CHUNK_SIZE):
            h.update(chunk)
        f.seek(0)
        if h.digest() != digest.raw:
            self.forget_verified(digest)
            log.error("blob %s is corrupt on disk (%s)", digest, self.path(digest))
            return False
        if fingerprint(os.fstat(f.fileno())) == before:  # unchanged while it was read
            self._remember(digest, before)
        return True

    def remember_verified(self, digest: ArtifactDigest, path: Path) -> None:
        """Trust the file now at ``path`` as ``digest`` (its bytes were just verified)."""
        with contextlib.suppress(FileNotFoundError):
            self._remember(digest, fingerprint(path.stat()))

    def forget_verified(self, digest: ArtifactDigest) -> None:
        """Stop trusting ``digest`` without re-hashing it."""
        with self._verified_lock:
            self._verified.pop(digest, None)

    def _remember(self, digest: ArtifactDigest, print_: Fingerprint) -> None:
        with self._verified_lock:
            self._verified[digest] = print_
            self._verified.move_to_end(digest)
            while len(self._verified) > MAX_VERIFIED:
                self._verified.popitem(last=False)

    def is_trusted(self, digest: ArtifactDigest, print_: Fingerprint) -> bool:
        """Whether a file with fingerprint ``print_`` is known to hash to ``digest``."""
        with self._verified_lock:
            return self._verified.get(digest) == print_

    def open_blob(self, digest: ArtifactDigest, *, verify: bool) -> OpenBlob:
        """Open a blob for serving, trusted if its fingerprint is known-good.

        With ``verify``, a blob not known to be good is re-hashed now (before a byte is
        served): :class:`StorageError` "blob ... is corrupt on disk" if it does not match.
        Without it, ``verified`` says whether it is trusted; stream an untrusted one
        with :meth:`OpenBlob.verified_chunks`. The caller closes the result (its
        iterators close it when they finish).
        """
        f = self.open(digest)
        try:
            print_ = fingerprint(os.fstat(f.fileno()))
            trusted = self.is_trusted(digest, print_)
            if not trusted and verify:
                if not self._rehash(digest, f):
                    raise StorageError(f"blob {digest} is corrupt on disk")
                trusted = True
            return OpenBlob(self, digest, f, print_, trusted)
        except BaseException:
            f.close()
            raise

    def open_verified(
        self, digest: ArtifactDigest, *, chunk_size: int = CHUNK_SIZE
    ) -> Iterator[bytes]:
        """Stream the whole blob, re-hashing it; a corrupt blob never streams completely.

        The last chunk is held back until the digest has been checked: a blob corrupt on
        disk raises :class:`StorageError` ("blob ... is corrupt on disk") *instead of*
        yielding its last chunk, so a consumer can never receive every byte of a bad blob
        and treat the download as finished. The price is one chunk of read-ahead (the
        first chunk is yielded only once the second has been read) — nothing for
        full downloads. ``NotFound`` is raised at call time; the file is opened when
        iteration starts.
        """
        if not self.has(digest):
            raise NotFound(f"blob {digest} is not stored")
        return self._verified_chunks(digest, chunk_size)

    def _verified_chunks(self, digest: ArtifactDigest, chunk_size: int) -> Iterator[bytes]:
        h = hashlib.sha256()
        with self.open(digest) as f:
            held = f.read(chunk_size)
            while held:
                h.update(held)
                following = f.read(chunk_size)
                if not following:
                    break
                yield held
                held = following
            if h.digest() != digest.raw:
                self.forget_verified(digest)
                log.error("blob %s is corrupt on disk (%s)", digest, self.path(digest))
                raise StorageError(f"blob {digest} is corrupt on disk")
            if held:
                yield held

    # -- maintenance -----------------------------------------------------------------

    def delete(self, digest: ArtifactDigest) -> bool:
        """Remove a blob (garbage collection, repair, tests); True if it was there.

        Not fsynced: a deletion lost in a crash brings back a valid blob, nothing worse.
        """
        try:
            self.path(digest).unlink()
        except FileNotFoundError:
            return False
        return True

    def __iter__(self) -> Iterator[ArtifactDigest]:
        """The stored digests, grouped by fan-out (files not named like blobs are skipped)."""
        base = self.root / ALGORITHM
        for fan_out in sorted(base.iterdir()):
            if len(fan_out.name) != 2 or not fan_out.is_dir():
                continue
            try:
                entries = builtins.list(fan_out.iterdir())
            except FileNotFoundError:  # removed by hand meanwhile
                continue
            for entry in entries:
                match = _DIGEST_RE.fullmatch(f"{ALGORITHM}:{fan_out.name}{entry.name}")
                if match is not None and entry.is_file():
                    yield ArtifactDigest(bytes.fromhex(match.group(1)))

    def list(self) -> builtins.list[ArtifactDigest]:
        """The stored digests, sorted."""
        return sorted(self, key=lambda d: d.raw)

    def stats(self) -> BlobStoreStats:
        """Count and total size of the stored blobs (walks the store)."""
        count = total = 0
        for digest in self:
            size = self.size(digest)
            if size is not None:  # deleted meanwhile
                count += 1
                total += size
        return BlobStoreStats(count, total)

    def clean_temp(self, *, older_than: float = STALE_TEMP_SECONDS) -> int:
        """Remove temp files last modified more than ``older_than`` seconds ago.

        Run on open. Younger temp files may belong to a writer that is still running (in
        this or another process), so they stay. Returns how many were removed.
        """
        cutoff = time.time() - older_than
        removed = 0
        for entry in (self.root / "tmp").iterdir():
            try:
                if entry.is_file() and entry.stat().st_mtime <= cutoff:
                    entry.unlink()
                    removed += 1
            except FileNotFoundError:  # another process cleaned or committed it meanwhile
                continue
        return removed


# -- fetching from peers ------------------------------------------------------------------


class BlobFetcher(Protocol):
    """A source of a blob's bytes, e.g. one peer miner over the network.

    Called with the digest, it returns the blob's bytes as an iterator of chunks. It may
    lie (wrong bytes) or fail (any exception); :func:`fetch_missing` guards against both.
    It should bound each read by its own timeout: a sync caller cannot interrupt a read
    that blocks forever.
    """

    def __call__(self, digest: ArtifactDigest, /) -> Iterator[bytes]: ...


def fetch_missing(
    store: BlobStore,
    digest: ArtifactDigest,
    size: int | None,
    sources: Sequence[BlobFetcher],
    deadline_seconds: float,
) -> bool:
    """Make sure ``store`` holds ``digest``, fetching it from ``sources`` in order.

    Returns True once the blob is stored (immediately if it already was), False if every
    source failed or the deadline passed. Each source streams into a writer that expects
    ``digest`` and ``size``, so a lying source is cut off as soon as it sends too much and
    its bytes never become visible; the next source is then tried. The deadline is
    checked before each source and between chunks. Errors of our own store
    (:class:`StorageError`) propagate: no peer can fix a full disk; so does
    :class:`InvalidInput` for a ``size`` no writer would accept (negative, or over the
    store's limit), before any peer is asked.

    A blob already stored counts only if its size is ``size``: a stored copy of another
    size is damaged (and is replaced by a good fetch), or ``size`` is wrong, in which case
    every honest source fails too and the answer is False — a miner must not vote for a
    registration whose size contradicts its digest.
    """
    if size is not None and not 0 <= size <= store.max_blob_bytes:
        raise InvalidInput(f"artifact size {size} is outside [0, {store.max_blob_bytes}]")
    stored_size = store.size(digest)
    if stored_size is not None and size in (None, stored_size):
        return True
    deadline = time.monotonic() + deadline_seconds
    for index, source in enumerate(sources):
        if time.monotonic() >= deadline:
            break
        try:
            if _fetch_from(store, digest, size, source, deadline):
                return True
            log.warning("fetching blob %s: deadline passed during source %d", digest, index)
            return False
        except StorageError:
            raise
        except Exception as exc:  # a failing peer is expected: note it and try the next one
            reason = str(exc) if isinstance(exc, TwinChainError) else repr(exc)
            log.warning("fetching blob %s from source %d failed: %s", digest, index, reason)
    return False


def _fetch_from(
    store: BlobStore,
    digest: ArtifactDigest,
    size: int | None,
    source: BlobFetcher,
    deadline: float,
) -> bool:
    """Stream one source into the store; False if the deadline passed first."""
    with store.writer(digest, size) as writer:
        chunks = source(digest)
        try:
            for chunk in chunks:
                if time.monotonic() >= deadline:
                    return False
                writer.write(chunk)
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:  # release the source's connection promptly
                close()
        writer.commit()
    return True


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _unlink_quietly(path: Path) -> None:
    # The only tolerated failure is "already gone" (a concurrent cleaner got there first).
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
