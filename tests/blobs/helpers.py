"""Shared helpers for the blob store tests."""

from __future__ import annotations

import os
from pathlib import Path

from node.blobs import ArtifactDigest, BlobStore


def temp_files(root: Path) -> list[Path]:
    """Every file in the store's temp directory."""
    return sorted((root / "tmp").iterdir())


def blob_files(root: Path) -> list[Path]:
    """Every file under the store's final names."""
    return sorted(p for p in (root / "sha256").rglob("*") if p.is_file())


def flip_byte(store: BlobStore, digest: ArtifactDigest, offset: int) -> None:
    """Corrupt one stored byte in place, as bit rot or a tamperer would."""
    path = store.path(digest)
    path.chmod(0o644)  # blobs are stored read-only
    with path.open("r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0x01]))
    os.chmod(path, 0o444)
