"""Child process for the crash tests: writes blobs until it is SIGKILLed.

``python -m tests.blobs.crash_child ROOT one-big`` streams one 64 MiB blob slowly,
printing ``wrote <bytes>`` after each 1 MiB chunk and never committing.
``python -m tests.blobs.crash_child ROOT many SEED`` prints ``ready``, then commits random
blobs of up to 2 MiB forever, printing ``committed <digest>`` after each commit returns.
"""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path

from node.blobs import BlobStore

MAX_BLOB = 64 << 20
CHUNK = 1 << 20


def one_big(store: BlobStore) -> None:
    """Write a big blob chunk by chunk, never committing."""
    writer = store.writer(None, MAX_BLOB)
    for _ in range(MAX_BLOB // CHUNK):
        writer.write(b"\xab" * CHUNK)
        print(f"wrote {writer.size}", flush=True)
        time.sleep(0.05)


def many(store: BlobStore, seed: int) -> None:
    """Commit random blobs forever."""
    rng = random.Random(seed)
    print("ready", flush=True)
    while True:
        with store.writer() as writer:
            for _ in range(rng.randint(0, 8)):
                writer.write(rng.randbytes(rng.randint(1, 256 << 10)))
            digest, _size = writer.commit()
        print(f"committed {digest}", flush=True)


def main(argv: list[str]) -> None:
    """Entry point: ``ROOT one-big`` or ``ROOT many SEED``."""
    store = BlobStore(Path(argv[0]), max_blob_bytes=MAX_BLOB)
    if argv[1] == "one-big":
        one_big(store)
    else:
        many(store, int(argv[2]))


if __name__ == "__main__":
    main(sys.argv[1:])
