"""Every malformed update is refused with an InvalidInput that says exactly what is wrong."""

from __future__ import annotations

import json
import re
from collections.abc import Callable

import numpy as np
import pytest
from safetensors.numpy import save as st_save

from node.errors import InvalidInput
from registry.fl import decode_update, encode_dense, updates

BASE = {"w": (2,)}
DENSE = {"twinchain.format": "1", "twinchain.kind": "dense"}
SPARSE = {"twinchain.format": "1", "twinchain.kind": "sparse", "twinchain.shape.w": "2"}
F32 = np.float32


def raw(header: object, buffer: bytes = b"", length: int | None = None) -> bytes:
    """A container with a hand-written header (bytes or JSON-able) and buffer."""
    text = header if isinstance(header, bytes) else json.dumps(header).encode()
    return (len(text) if length is None else length).to_bytes(8, "little") + text + buffer


def entry(dtype: str, shape: list[int], begin: int, end: int) -> dict[str, object]:
    return {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}


def sparse(indices: np.ndarray, values: np.ndarray, name: str = "w", **meta: str) -> bytes:
    tensors = {f"{name}::indices": indices, f"{name}::values": values}
    return st_save(tensors, metadata={**SPARSE, **meta})


def idx(*values: int, dtype: type = np.int64) -> np.ndarray:
    return np.array(values, dtype=dtype)


def val(*values: float) -> np.ndarray:
    return np.array(values, dtype=F32)


CASES: dict[str, tuple[Callable[[], bytes], str]] = {
    # ---- the container
    "short": (
        lambda: b"\x00" * 4,
        "malformed safetensors: 4 bytes, shorter than the 8-byte header length",
    ),
    "header past end": (
        lambda: raw(b"{}", length=100),
        "malformed safetensors: header length 100 exceeds the 2 bytes present",
    ),
    "header over limit": (
        lambda: raw(b"{}", length=2**40),
        "malformed safetensors: header of 1099511627776 bytes exceeds the limit of 16777216",
    ),
    "not an object": (lambda: raw(b"[]"), "malformed safetensors: header does not start with '{'"),
    "not utf-8": (
        lambda: raw(b'{"\xff": 1}'),
        "malformed safetensors: header is not UTF-8 (invalid start byte at byte 2)",
    ),
    "not json": (
        lambda: raw(b"{nope}"),
        "malformed safetensors: header is not JSON (Expecting property name enclosed in "
        "double quotes at char 1)",
    ),
    "duplicate key": (
        lambda: raw(b'{"a": 1, "a": 2}'),
        "malformed safetensors: duplicate key 'a' in header",
    ),
    "nan in header": (
        lambda: raw(b'{"a": NaN}'),
        "malformed safetensors: header contains the non-JSON constant NaN",
    ),
    "metadata not object": (
        lambda: raw({"__metadata__": []}),
        "malformed safetensors: __metadata__ is not an object",
    ),
    "metadata not string": (
        lambda: raw({"__metadata__": {"k": 1}}),
        "malformed safetensors: __metadata__ value of 'k' is not a string",
    ),
    "entry keys": (
        lambda: raw({"w": {"dtype": "F32", "shape": [2]}}),
        "malformed safetensors: entry of tensor 'w' must have exactly dtype, shape, data_offsets",
    ),
    "empty name": (
        lambda: raw({"": entry("F32", [0], 0, 0)}),
        "malformed safetensors: empty tensor name",
    ),
    "unknown dtype": (
        lambda: raw({"w": entry("F99", [2], 0, 8)}, bytes(8)),
        "malformed safetensors: tensor 'w' has unknown dtype 'F99'",
    ),
    "negative dim": (
        lambda: raw({"w": entry("F32", [-2], 0, 8)}, bytes(8)),
        "malformed safetensors: shape of tensor 'w' is not a list of non-negative integers",
    ),
    "boolean dim": (
        lambda: raw({"w": entry("F32", [True], 0, 4)}, bytes(4)),
        "malformed safetensors: shape of tensor 'w' is not a list of non-negative integers",
    ),
    "offsets reversed": (
        lambda: raw({"w": entry("F32", [2], 8, 0)}, bytes(8)),
        "malformed safetensors: data_offsets of tensor 'w' is not [begin, end] with begin <= end",
    ),
    "size mismatch": (
        lambda: raw({"w": entry("F32", [2], 0, 4)}, bytes(4)),
        "malformed safetensors: tensor 'w' (F32 [2]) needs 8 bytes, data_offsets span 4",
    ),
    "gap": (
        lambda: raw({"a": entry("F32", [2], 0, 8), "b": entry("F32", [2], 12, 20)}, bytes(20)),
        "malformed safetensors: data of tensor 'b' starts at 12: leaves a gap",
    ),
    "overlap": (
        lambda: raw({"a": entry("F32", [2], 0, 8), "b": entry("F32", [2], 4, 12)}, bytes(12)),
        "malformed safetensors: data of tensor 'b' starts at 4: overlaps the previous tensor",
    ),
    "trailing bytes": (
        lambda: raw({"w": entry("F32", [2], 0, 8)}, bytes(12)),
        "malformed safetensors: tensors cover 8 bytes of a 12-byte buffer",
    ),
    # ---- the metadata
    "no metadata": (
        lambda: st_save({"w": val(1, 2)}),
        "update lacks metadata 'twinchain.format'",
    ),
    "future format": (
        lambda: st_save({"w": val(1, 2)}, metadata={**DENSE, "twinchain.format": "2"}),
        "update format '2' is not supported (expected '1')",
    ),
    "no kind": (
        lambda: st_save({"w": val(1, 2)}, metadata={"twinchain.format": "1"}),
        "update kind None is not 'dense' or 'sparse'",
    ),
    "unknown kind": (
        lambda: st_save({"w": val(1, 2)}, metadata={**DENSE, "twinchain.kind": "delta"}),
        "update kind 'delta' is not 'dense' or 'sparse'",
    ),
    "unknown key": (
        lambda: st_save({"w": val(1, 2)}, metadata={**DENSE, "twinchain.note": "hi"}),
        "unknown metadata key 'twinchain.note' in a dense update",
    ),
    "shape key in dense": (
        lambda: st_save({"w": val(1, 2)}, metadata={**DENSE, "twinchain.shape.w": "2"}),
        "unknown metadata key 'twinchain.shape.w' in a dense update",
    ),
    # ---- dense updates
    "dense extra tensor": (
        lambda: st_save({"w": val(1, 2), "v": val(1)}, metadata=DENSE),
        "dense update has tensor 'v', which the base model lacks",
    ),
    "dense missing tensor": (
        lambda: st_save({}, metadata=DENSE),
        "dense update lacks tensor 'w'",
    ),
    "dense f64": (
        lambda: st_save({"w": np.zeros(2)}, metadata=DENSE),
        "tensor 'w' has dtype F64, expected F32",
    ),
    "dense bf16": (
        lambda: raw({"__metadata__": DENSE, "w": entry("BF16", [2], 0, 4)}, bytes(4)),
        "tensor 'w' has dtype BF16, expected F32",
    ),
    "dense shape": (
        lambda: st_save({"w": val(1, 2, 3)}, metadata=DENSE),
        "tensor 'w' has shape (3,), the base has (2,)",
    ),
    "dense nan": (
        lambda: st_save({"w": val(1, np.nan)}, metadata=DENSE),
        "tensor 'w' is not finite at flat index 1",
    ),
    "dense inf": (
        lambda: st_save({"w": val(-np.inf, 1)}, metadata=DENSE),
        "tensor 'w' is not finite at flat index 0",
    ),
    # ---- sparse updates
    "sparse bad suffix": (
        lambda: st_save({"w::idx": idx(0), "w::values": val(1)}, metadata=SPARSE),
        "sparse tensor 'w::idx' is not '<name>::indices' or '<name>::values'",
    ),
    "sparse plain name": (
        lambda: st_save({"w": val(1, 2)}, metadata=SPARSE),
        "sparse tensor 'w' is not '<name>::indices' or '<name>::values'",
    ),
    "sparse missing values": (
        lambda: st_save({"w::indices": idx(0)}, metadata=SPARSE),
        "sparse tensor 'w' lacks 'w::values'",
    ),
    "sparse unknown tensor": (
        lambda: sparse(idx(0), val(1), name="v"),
        "sparse update has tensor 'v', which the base model lacks",
    ),
    "sparse missing tensor": (
        lambda: st_save({}, metadata=DENSE | {"twinchain.kind": "sparse"}),
        "sparse update lacks tensor 'w'",
    ),
    "sparse no shape": (
        lambda: st_save(
            {"w::indices": idx(0), "w::values": val(1)},
            metadata={"twinchain.format": "1", "twinchain.kind": "sparse"},
        ),
        "sparse update lacks metadata 'twinchain.shape.w'",
    ),
    "sparse shape text": (
        lambda: sparse(idx(0), val(1), **{"twinchain.shape.w": "2, 3"}),
        "metadata 'twinchain.shape.w' = '2, 3' is not 'd0,d1,...'",
    ),
    "sparse shape leading zero": (
        lambda: sparse(idx(0), val(1), **{"twinchain.shape.w": "02"}),
        "metadata 'twinchain.shape.w' = '02' is not 'd0,d1,...'",
    ),
    "sparse shape mismatch": (
        lambda: sparse(idx(0), val(1), **{"twinchain.shape.w": "1,2"}),
        "tensor 'w' has shape '1,2' in metadata, the base has '2'",
    ),
    "sparse orphan shape": (
        lambda: sparse(idx(0), val(1), **{"twinchain.shape.v": "2"}),
        "metadata 'twinchain.shape.v' names no tensor of the update",
    ),
    "sparse f32 indices": (
        lambda: sparse(val(0), val(1)),
        "'w::indices' has dtype F32, expected I64 or U32",
    ),
    "sparse i32 indices": (
        lambda: sparse(idx(0, dtype=np.int32), val(1)),
        "'w::indices' has dtype I32, expected I64 or U32",
    ),
    "sparse f64 values": (
        lambda: sparse(idx(0), np.ones(1)),
        "'w::values' has dtype F64, expected F32",
    ),
    "sparse 2-d indices": (
        lambda: sparse(np.zeros((1, 1), dtype=np.int64), val(1)),
        "'w::indices' has shape (1, 1), expected 1-D",
    ),
    "sparse length mismatch": (
        lambda: sparse(idx(0, 1), val(1)),
        "'w::indices' has 2 entries, 'w::values' has 1",
    ),
    "sparse too many": (
        lambda: sparse(idx(0, 1, 1), val(1, 2, 3)),
        "tensor 'w' carries 3 entries for 2 coordinates",
    ),
    "sparse negative index": (
        lambda: sparse(idx(-1), val(1)),
        "'w::indices' entry 0 is -1, outside [0, 2)",
    ),
    "sparse index past end": (
        lambda: sparse(idx(0, 2, dtype=np.uint32), val(1, 2)),
        "'w::indices' entry 1 is 2, outside [0, 2)",
    ),
    "sparse duplicate index": (
        lambda: sparse(idx(1, 1), val(1, 2)),
        "'w::indices' repeats index 1",
    ),
    "sparse nan value": (
        lambda: sparse(idx(1, 0), val(np.nan, 2)),
        "'w::values' is not finite at entry 1",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_malformed_update_is_refused_with_a_precise_message(case: str) -> None:
    build, message = CASES[case]
    with pytest.raises(InvalidInput, match=f"^{re.escape(message)}$") as caught:
        decode_update(build(), BASE, samples=1)
    assert caught.value.caller_fault


@pytest.mark.parametrize("samples", [0, -1, True, 1.5])
def test_a_sample_count_that_is_not_a_positive_integer_is_refused(samples: object) -> None:
    blob = encode_dense({"w": val(1, 2)})
    message = f"sample count must be a positive integer, got {samples!r}"
    with pytest.raises(InvalidInput, match=f"^{re.escape(message)}$"):
        decode_update(blob, BASE, samples=samples)  # type: ignore[arg-type]


def test_an_update_over_the_size_limit_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    blob = encode_dense({"w": val(1, 2)})
    monkeypatch.setattr(updates, "MAX_BLOB_BYTES", len(blob) - 1)
    message = f"update of {len(blob)} bytes exceeds the limit of {len(blob) - 1}"
    with pytest.raises(InvalidInput, match=f"^{re.escape(message)}$"):
        decode_update(blob, BASE, samples=1)


def test_metadata_outside_the_twinchain_namespace_is_ignored() -> None:
    blob = st_save({"w": val(1, 2)}, metadata={**DENSE, "format": "np", "note": "x"})
    assert decode_update(blob, BASE, samples=1).deltas["w"].tolist() == [1.0, 2.0]  # type: ignore[union-attr]
