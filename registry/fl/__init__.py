"""Deterministic federated aggregation for TwinChain rounds.

A round names a base model (safetensors of float32 tensors); twins push dense or sparse
top-k deltas against it (:mod:`registry.fl.updates` defines the file format); when the
round closes every miner recomputes ``base + aggregate(deltas)`` with the recorded
strategy and checks the SHA-256 of the canonical result against the chain
(:mod:`registry.fl.strategies` states the determinism rules).

Typical miner use::

    model_bytes, digest = aggregate_bytes(base_blob, update_blobs, samples, "fedavg")
"""

from registry.fl.strategies import (
    Strategy,
    UnsafeFloatEnvironment,
    aggregate,
    aggregate_bytes,
    check_float_environment,
    parse_strategy,
)
from registry.fl.updates import (
    MAX_BLOB_BYTES,
    SparseDelta,
    Update,
    UpdateKind,
    decode_update,
    encode_dense,
    encode_sparse,
    load_model,
    save_model,
)

__all__ = [
    "MAX_BLOB_BYTES",
    "SparseDelta",
    "Strategy",
    "UnsafeFloatEnvironment",
    "Update",
    "UpdateKind",
    "aggregate",
    "aggregate_bytes",
    "check_float_environment",
    "decode_update",
    "encode_dense",
    "encode_sparse",
    "load_model",
    "parse_strategy",
    "save_model",
]
