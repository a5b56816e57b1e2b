"""Canonical, validating reader and writer of the safetensors container.

Theory of operation
-------------------
A safetensors file is ``u64 little-endian header length N`` + ``N bytes of UTF-8 JSON`` +
a byte buffer. The JSON object maps each tensor name to
``{"dtype": "F32", "shape": [d0, ...], "data_offsets": [begin, end]}`` (offsets relative to
the buffer) and may hold a ``"__metadata__"`` object of string to string.

We read and write the container ourselves instead of calling the ``safetensors`` package,
for two reasons:

- **Canonical bytes.** A model's SHA-256 goes on chain and every miner recomputes it, so
  the same tensors must give the same bytes on every machine and with every library
  version. ``safetensors`` 0.8 serialises ``__metadata__`` from a Rust ``HashMap``: the
  key order (hence the bytes and the digest) changes from one process to the next.
  :func:`write_tensor_file` emits JSON with sorted keys and no whitespace, orders the
  data by (alignment descending, name) -- the same layout rule as ``safetensors`` -- and
  pads the header with spaces to a multiple of 8 so every tensor is aligned.
- **Precise refusals.** An update blob comes from a twin, so the reader checks everything
  before touching the data (header bounds, JSON shape, duplicate keys, dtypes, shapes,
  offsets that tile the buffer exactly) and says what is wrong in an
  :class:`~node.errors.InvalidInput`.

Files written here load with ``safetensors.numpy.load``, and files written by that
package read here. Tensors come back as zero-copy, read-only NumPy views of the input.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from node.errors import InvalidInput

#: Largest JSON header we parse (the ``safetensors`` package allows 100 MB; a model with
#: 100,000 tensors needs about 10 MB).
MAX_HEADER_BYTES = 16 * 2**20

#: The dtypes safetensors names, with the NumPy dtype of those we can materialise.
_DTYPES: dict[str, np.dtype[Any] | None] = {
    "BOOL": np.dtype("?"),
    "U8": np.dtype("u1"),
    "I8": np.dtype("i1"),
    "U16": np.dtype("<u2"),
    "I16": np.dtype("<i2"),
    "F16": np.dtype("<f2"),
    "BF16": None,
    "F8_E4M3": None,
    "F8_E5M2": None,
    "U32": np.dtype("<u4"),
    "I32": np.dtype("<i4"),
    "F32": np.dtype("<f4"),
    "U64": np.dtype("<u8"),
    "I64": np.dtype("<i8"),
    "F64": np.dtype("<f8"),
}
_ITEMSIZE = {"BF16": 2, "F8_E4M3": 1, "F8_E5M2": 1}
_WRITABLE = {np.dtype("<f4"): "F32", np.dtype("<i8"): "I64", np.dtype("<u4"): "U32"}


@dataclass(frozen=True, eq=False)
class TensorEntry:
    """One tensor of a parsed file: its safetensors dtype name, shape and data view."""

    dtype: str
    shape: tuple[int, ...]
    #: Read-only view of the data, or None for dtypes NumPy cannot represent (BF16, F8).
    array: np.ndarray | None


@dataclass(frozen=True, eq=False)
class TensorFile:
    """A parsed safetensors file: tensors by name and the ``__metadata__`` strings."""

    tensors: Mapping[str, TensorEntry]
    metadata: Mapping[str, str]


def _malformed(reason: str) -> InvalidInput:
    return InvalidInput(f"malformed safetensors: {reason}")


def _reject_constant(name: str) -> Any:
    raise _malformed(f"header contains the non-JSON constant {name}")


def _unique_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _malformed(f"duplicate key {key!r} in header")
        result[key] = value
    return result


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _parse_header(data: bytes) -> tuple[dict[str, Any], int]:
    if len(data) < 8:
        raise _malformed(f"{len(data)} bytes, shorter than the 8-byte header length")
    header_len = int.from_bytes(data[:8], "little")
    if header_len > MAX_HEADER_BYTES:
        raise _malformed(f"header of {header_len} bytes exceeds the limit of {MAX_HEADER_BYTES}")
    if header_len > len(data) - 8:
        raise _malformed(f"header length {header_len} exceeds the {len(data) - 8} bytes present")
    raw = data[8 : 8 + header_len]
    if not raw.startswith(b"{"):
        raise _malformed("header does not start with '{'")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _malformed(f"header is not UTF-8 ({exc.reason} at byte {exc.start})") from exc
    try:
        header = json.loads(text, object_pairs_hook=_unique_object, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise _malformed(f"header is not JSON ({exc.msg} at char {exc.pos})") from exc
    if not isinstance(header, dict):
        raise _malformed("header is not a JSON object")
    return header, 8 + header_len


def _parse_metadata(value: object) -> dict[str, str]:
    if not isinstance(value, dict):
        raise _malformed("__metadata__ is not an object")
    for key, item in value.items():
        if not isinstance(item, str):
            raise _malformed(f"__metadata__ value of {key!r} is not a string")
    return dict(value)


def _parse_entry(name: str, entry: object) -> tuple[str, tuple[int, ...], int, int]:
    if not name:
        raise _malformed("empty tensor name")
    if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
        raise _malformed(f"entry of tensor {name!r} must have exactly dtype, shape, data_offsets")
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if dtype not in _DTYPES:
        raise _malformed(f"tensor {name!r} has unknown dtype {dtype!r}")
    if not isinstance(shape, list) or not all(_is_count(d) for d in shape):
        raise _malformed(f"shape of tensor {name!r} is not a list of non-negative integers")
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(_is_count(o) for o in offsets)
        or offsets[0] > offsets[1]
    ):
        raise _malformed(f"data_offsets of tensor {name!r} is not [begin, end] with begin <= end")
    itemsize = _ITEMSIZE.get(dtype) or _itemsize(dtype)
    expected = math.prod(shape) * itemsize
    if offsets[1] - offsets[0] != expected:
        raise _malformed(
            f"tensor {name!r} ({dtype} {shape}) needs {expected} bytes, "
            f"data_offsets span {offsets[1] - offsets[0]}"
        )
    return dtype, tuple(shape), offsets[0], offsets[1]


def _itemsize(dtype: str) -> int:
    np_dtype = _DTYPES[dtype]
    assert np_dtype is not None
    return np_dtype.itemsize


def read_tensor_file(data: bytes) -> TensorFile:
    """Parse and validate a safetensors file; tensors are zero-copy read-only views.

    Raises InvalidInput naming the first defect found; never reads outside ``data``.
    """
    header, buffer_start = _parse_header(data)
    metadata = _parse_metadata(header.pop("__metadata__", {}))
    buffer_len = len(data) - buffer_start
    parsed = {name: _parse_entry(name, entry) for name, entry in header.items()}
    position = 0
    for name, (_, _, begin, end) in sorted(parsed.items(), key=lambda item: item[1][2:]):
        if begin != position:
            kind = "overlaps the previous tensor" if begin < position else "leaves a gap"
            raise _malformed(f"data of tensor {name!r} starts at {begin}: {kind}")
        position = end
    if position != buffer_len:
        raise _malformed(f"tensors cover {position} bytes of a {buffer_len}-byte buffer")
    view = memoryview(data)
    tensors: dict[str, TensorEntry] = {}
    for name, (dtype, shape, begin, end) in parsed.items():
        np_dtype = _DTYPES[dtype]
        array = None
        if np_dtype is not None:
            chunk = view[buffer_start + begin : buffer_start + end]
            array = np.frombuffer(chunk, dtype=np_dtype).reshape(shape)
            array.flags.writeable = False
        tensors[name] = TensorEntry(dtype=dtype, shape=shape, array=array)
    return TensorFile(tensors=tensors, metadata=metadata)


def write_tensor_file(tensors: Mapping[str, np.ndarray], metadata: Mapping[str, str]) -> bytes:
    """Serialise tensors (float32, int64 or uint32) canonically: same input, same bytes.

    The header is JSON with sorted keys and no whitespace, ``__metadata__`` included only
    when non-empty, padded with spaces to a multiple of 8; data is laid out by
    (itemsize descending, name) so every tensor is aligned to its itemsize.
    """
    entries: list[tuple[str, str, np.ndarray]] = []
    for name, array in tensors.items():
        if not isinstance(name, str) or not name or name == "__metadata__":
            raise InvalidInput(f"invalid tensor name {name!r}")
        little = np.dtype(array.dtype).newbyteorder("<")
        if little not in _WRITABLE:
            raise InvalidInput(f"tensor {name!r} has dtype {array.dtype}; cannot write it")
        entries.append((name, _WRITABLE[little], np.asarray(array, dtype=little, order="C")))
    entries.sort(key=lambda e: (-e[2].dtype.itemsize, e[0]))
    header: dict[str, Any] = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    offset = 0
    for name, dtype, array in entries:
        header[name] = {
            "dtype": dtype,
            "shape": list(array.shape),
            "data_offsets": [offset, offset + array.nbytes],
        }
        offset += array.nbytes
    text = json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    raw = text.encode("utf-8")
    raw += b" " * (-len(raw) % 8)
    parts: list[bytes | memoryview] = [len(raw).to_bytes(8, "little"), raw]
    parts.extend(array.reshape(-1).view(np.uint8).data for _, _, array in entries)
    return b"".join(parts)
