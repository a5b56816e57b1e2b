"""A fixed round whose aggregate digests must never change, in any process or on any machine.

The inputs come from integer arithmetic (a multiplicative hash scaled by powers of two),
not from a random generator, so they are the same bits everywhere. Run as a module it
prints the digests as JSON; the tests compare that output, produced in a subprocess with
another PYTHONHASHSEED, with the in-process result and with pinned values.
"""

from __future__ import annotations

import json
import math

import numpy as np

from registry.fl import aggregate_bytes, encode_dense, encode_sparse, save_model

SHAPES = {"decoder.bias": (7,), "encoder.weight": (33, 17), "gain": ()}
STRATEGIES = ("fedavg", "median", "trimmed-mean:0.2")


def hashed_values(shape: tuple[int, ...], salt: int) -> np.ndarray:
    """Float32 values in about [-4, 4) with ties and zeros, from integer hashing only."""
    count = math.prod(shape)
    index = np.arange(count, dtype=np.uint64) + np.uint64(salt * 1_000_003)
    mixed = (index * np.uint64(2654435761)) % np.uint64(2**32)
    values = (mixed.astype(np.int64) - 2**31) // 2**20  # integers in [-2048, 2048)
    values[mixed % np.uint64(11) == 0] = 0  # some exact zeros and ties
    return (values.astype(np.float32) / np.float32(512.0)).reshape(shape)


def round_blobs() -> tuple[bytes, list[bytes], list[int]]:
    """The base model, seven updates (dense and sparse, U32 indices) and their samples."""
    base = save_model({name: hashed_values(shape, 0) for name, shape in SHAPES.items()})
    blobs = []
    for twin in range(1, 8):
        deltas = {name: hashed_values(shape, twin) for name, shape in SHAPES.items()}
        if twin % 3 == 0:
            blobs.append(encode_dense(deltas))
        else:
            blobs.append(encode_sparse(deltas, fraction=0.1 * twin))
    samples = [10**twin % 997 + 1 for twin in range(1, 8)]
    return base, blobs, samples


def digests() -> dict[str, str]:
    """SHA-256 of the aggregate model for each strategy."""
    base, blobs, samples = round_blobs()
    return {s: aggregate_bytes(base, blobs, samples, s)[1] for s in STRATEGIES}


if __name__ == "__main__":
    print(json.dumps(digests(), sort_keys=True))
