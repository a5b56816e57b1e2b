"""Training updates and model files: encoding, decoding and validation.

Theory of operation
-------------------
A federated round names a base model: a safetensors file of named float32 tensors. A
twin trains from it and pushes an *update*, the difference ``new - base``, in one of two
kinds (the ``kind`` that ``ModelRegistry.pushUpdate`` records: 0 dense, 1 sparse).

Update file format, version 1 (a safetensors file, see :mod:`registry.fl.tensorfile`):

``__metadata__``
    ``"twinchain.format": "1"`` and ``"twinchain.kind": "dense" | "sparse"`` are required.
    A sparse update adds ``"twinchain.shape.<name>": "d0,d1,..."`` for each tensor (decimal,
    no spaces, ``""`` for a 0-d tensor). Any other ``twinchain.*`` key is refused; keys
    outside that namespace are ignored.
dense
    One F32 tensor per base tensor, same name, same shape: the delta itself.
sparse
    Per base tensor ``<name>``: ``<name>::indices``, a 1-D I64 or U32 tensor of flat
    (row-major) indices into the tensor, and ``<name>::values``, a 1-D F32 tensor of the
    same length. Indices are distinct and in ``[0, size)``; any order is accepted, the
    encoder writes them ascending. A coordinate not listed has delta 0. A tensor the twin
    did not train is sent with zero entries. Names split at the *last* ``::``, so base
    tensor names may themselves contain ``::``.

Both kinds carry every base tensor and nothing else; every value is finite. An update is
refused with an :class:`~node.errors.InvalidInput` that names the tensor and the defect.

Decoded updates are immutable: dense deltas are zero-copy read-only views of the blob;
sparse indices are int64 ascending, and values have ``-0.0`` replaced by ``+0.0`` (sorting
cannot order the two zeros, so we keep one; see :mod:`registry.fl.strategies`).

Model files (:func:`save_model`) are canonical: F32 tensors, sorted header, fixed
metadata ``{"twinchain.format": "1", "twinchain.kind": "model"}``, so the same tensors
always give the same bytes and the same SHA-256. :func:`load_model` reads any safetensors
file of F32 tensors, whoever wrote it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum

import numpy as np

from node.errors import InvalidInput
from registry.fl.tensorfile import TensorEntry, read_tensor_file, write_tensor_file

Shape = tuple[int, ...]

FORMAT_VERSION = "1"
META_FORMAT = "twinchain.format"
META_KIND = "twinchain.kind"
META_SHAPE = "twinchain.shape."
INDICES = "::indices"
VALUES = "::values"

#: Largest update or model blob accepted (a dense update of a 1G-parameter model).
MAX_BLOB_BYTES = 4 * 2**30

_MODEL_METADATA = {META_FORMAT: FORMAT_VERSION, META_KIND: "model"}
_SHAPE_TEXT = re.compile(r"(?:(?:0|[1-9][0-9]*)(?:,(?:0|[1-9][0-9]*))*)?")
_SCAN = 1 << 20  # elements per finiteness scan step: bounds the temporary mask


class UpdateKind(IntEnum):
    """The update kinds, numbered as ModelRegistry.pushUpdate records them."""

    DENSE = 0
    SPARSE = 1


@dataclass(frozen=True, eq=False)
class SparseDelta:
    """The top-k delta of one tensor: ``delta.flat[indices] = values``, 0 elsewhere."""

    shape: Shape
    indices: np.ndarray  # int64, strictly increasing, in [0, prod(shape))
    values: np.ndarray  # float32, finite, never -0.0

    @property
    def size(self) -> int:
        """Number of coordinates of the tensor (not of entries carried)."""
        return math.prod(self.shape)


@dataclass(frozen=True, eq=False)
class Update:
    """A decoded, validated training update and the sample count the chain records."""

    kind: UpdateKind
    samples: int
    #: Tensor name -> dense delta (float32, base shape) or :class:`SparseDelta`.
    deltas: Mapping[str, np.ndarray | SparseDelta]


def _read_only(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array


def _shape_text(shape: Shape) -> str:
    return ",".join(str(d) for d in shape)


def _first_nonfinite(array: np.ndarray) -> int | None:
    """Flat index of the first NaN or Inf, scanning in bounded steps; None if all finite."""
    flat = array.reshape(-1)
    for lo in range(0, flat.size, _SCAN):
        step = flat[lo : lo + _SCAN]
        if not np.isfinite(step).all():
            return lo + int(np.argmin(np.isfinite(step)))
    return None


def is_float32(array: object) -> bool:
    """True for a NumPy array of 4-byte floats, in either byte order."""
    return isinstance(array, np.ndarray) and array.dtype.kind == "f" and array.dtype.itemsize == 4


def _check_delta(name: str, array: np.ndarray) -> np.ndarray:
    if not is_float32(array):
        dtype = getattr(array, "dtype", type(array).__name__)
        raise InvalidInput(f"delta of tensor {name!r} has dtype {dtype}, expected float32")
    bad = _first_nonfinite(array)
    if bad is not None:
        raise InvalidInput(f"delta of tensor {name!r} is not finite at flat index {bad}")
    return array


def encode_dense(deltas: Mapping[str, np.ndarray]) -> bytes:
    """Encode dense float32 deltas (``new - base`` per tensor) as a version-1 update blob."""
    for name, array in deltas.items():
        _check_delta(name, array)
    return write_tensor_file(deltas, {META_FORMAT: FORMAT_VERSION, META_KIND: "dense"})


def top_k_indices(flat: np.ndarray, k: int) -> np.ndarray:
    """Ascending flat indices of the k largest |values|; equal magnitudes go to lower index."""
    size = flat.size
    if k >= size:
        return np.arange(size, dtype=np.int64)
    if k <= 0:
        return np.empty(0, dtype=np.int64)
    magnitude = np.abs(flat)
    threshold = np.partition(magnitude, size - k)[size - k]
    above = np.flatnonzero(magnitude > threshold)
    ties = np.flatnonzero(magnitude == threshold)[: k - above.size]
    return np.sort(np.concatenate([above, ties])).astype(np.int64)


def _entries_for(size: int, k: int | None, fraction: float | None) -> int:
    if k is not None:
        return min(k, size)
    assert fraction is not None
    return min(size, max(1, math.ceil(fraction * size))) if size else 0


def encode_sparse(
    deltas: Mapping[str, np.ndarray], *, k: int | None = None, fraction: float | None = None
) -> bytes:
    """Encode the top-k entries by magnitude of each tensor's delta as a sparse update blob.

    Give exactly one of ``k`` (entries per tensor, capped at its size) or ``fraction``
    (``ceil(fraction * size)`` entries per tensor, at least 1). Ties in magnitude go to
    the lower flat index, so the same deltas always give the same blob.
    """
    if (k is None) == (fraction is None):
        raise InvalidInput("give exactly one of k and fraction")
    if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 0):
        raise InvalidInput(f"k must be a non-negative integer, got {k!r}")
    if fraction is not None and not 0.0 < fraction <= 1.0:
        raise InvalidInput(f"fraction must be in (0, 1], got {fraction!r}")
    tensors: dict[str, np.ndarray] = {}
    metadata = {META_FORMAT: FORMAT_VERSION, META_KIND: "sparse"}
    for name, array in deltas.items():
        flat = _check_delta(name, array).reshape(-1)
        chosen = top_k_indices(flat, _entries_for(flat.size, k, fraction))
        index_dtype = np.uint32 if flat.size <= 2**32 else np.int64
        tensors[name + INDICES] = chosen.astype(index_dtype)
        tensors[name + VALUES] = flat[chosen]
        metadata[META_SHAPE + name] = _shape_text(array.shape)
    return write_tensor_file(tensors, metadata)


def _check_samples(samples: int) -> int:
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise InvalidInput(f"sample count must be a positive integer, got {samples!r}")
    return samples


def _check_metadata(metadata: Mapping[str, str]) -> str:
    if META_FORMAT not in metadata:
        raise InvalidInput(f"update lacks metadata {META_FORMAT!r}")
    if metadata[META_FORMAT] != FORMAT_VERSION:
        raise InvalidInput(
            f"update format {metadata[META_FORMAT]!r} is not supported (expected "
            f"{FORMAT_VERSION!r})"
        )
    kind = metadata.get(META_KIND)
    if kind not in ("dense", "sparse"):
        raise InvalidInput(f"update kind {kind!r} is not 'dense' or 'sparse'")
    for key in metadata:
        known = key in (META_FORMAT, META_KIND) or (kind == "sparse" and key.startswith(META_SHAPE))
        if key.startswith("twinchain.") and not known:
            raise InvalidInput(f"unknown metadata key {key!r} in a {kind} update")
    return kind


def _check_names(kind: str, present: set[str], base_shapes: Mapping[str, Shape]) -> None:
    for name in sorted(present - set(base_shapes)):
        raise InvalidInput(f"{kind} update has tensor {name!r}, which the base model lacks")
    for name in sorted(set(base_shapes) - present):
        raise InvalidInput(f"{kind} update lacks tensor {name!r}")


def _decode_dense(
    tensors: Mapping[str, TensorEntry], base_shapes: Mapping[str, Shape]
) -> dict[str, np.ndarray | SparseDelta]:
    _check_names("dense", set(tensors), base_shapes)
    deltas: dict[str, np.ndarray | SparseDelta] = {}
    for name in sorted(tensors):
        entry = tensors[name]
        if entry.dtype != "F32":
            raise InvalidInput(f"tensor {name!r} has dtype {entry.dtype}, expected F32")
        if entry.shape != tuple(base_shapes[name]):
            raise InvalidInput(
                f"tensor {name!r} has shape {entry.shape}, the base has {tuple(base_shapes[name])}"
            )
        assert entry.array is not None
        bad = _first_nonfinite(entry.array)
        if bad is not None:
            raise InvalidInput(f"tensor {name!r} is not finite at flat index {bad}")
        deltas[name] = entry.array
    return deltas


def _split_sparse_names(tensors: Mapping[str, TensorEntry]) -> set[str]:
    names: set[str] = set()
    for full in tensors:
        base, sep, part = full.rpartition("::")
        if not sep or not base or part not in ("indices", "values"):
            raise InvalidInput(
                f"sparse tensor {full!r} is not '<name>::indices' or '<name>::values'"
            )
        names.add(base)
    for name in sorted(names):
        for suffix in (INDICES, VALUES):
            if name + suffix not in tensors:
                raise InvalidInput(f"sparse tensor {name!r} lacks {name + suffix!r}")
    return names


def _check_shape_metadata(
    metadata: Mapping[str, str], names: set[str], base_shapes: Mapping[str, Shape]
) -> None:
    for key in sorted(metadata):
        if key.startswith(META_SHAPE) and key[len(META_SHAPE) :] not in names:
            raise InvalidInput(f"metadata {key!r} names no tensor of the update")
    for name in sorted(names):
        text = metadata.get(META_SHAPE + name)
        if text is None:
            raise InvalidInput(f"sparse update lacks metadata {META_SHAPE + name!r}")
        if not _SHAPE_TEXT.fullmatch(text):
            raise InvalidInput(f"metadata {META_SHAPE + name!r} = {text!r} is not 'd0,d1,...'")
        expected = _shape_text(tuple(base_shapes[name]))
        if text != expected:
            raise InvalidInput(
                f"tensor {name!r} has shape {text!r} in metadata, the base has {expected!r}"
            )


def _decode_sparse_tensor(
    name: str, size: int, indices: TensorEntry, values: TensorEntry
) -> tuple[np.ndarray, np.ndarray]:
    if indices.dtype not in ("I64", "U32"):
        raise InvalidInput(f"{name + INDICES!r} has dtype {indices.dtype}, expected I64 or U32")
    if values.dtype != "F32":
        raise InvalidInput(f"{name + VALUES!r} has dtype {values.dtype}, expected F32")
    for full, entry in ((name + INDICES, indices), (name + VALUES, values)):
        if len(entry.shape) != 1:
            raise InvalidInput(f"{full!r} has shape {entry.shape}, expected 1-D")
    if indices.shape != values.shape:
        raise InvalidInput(
            f"{name + INDICES!r} has {indices.shape[0]} entries, "
            f"{name + VALUES!r} has {values.shape[0]}"
        )
    if indices.shape[0] > size:
        raise InvalidInput(
            f"tensor {name!r} carries {indices.shape[0]} entries for {size} coordinates"
        )
    assert indices.array is not None and values.array is not None
    idx = indices.array.astype(np.int64)
    val = values.array
    if idx.size:
        out = np.flatnonzero((idx < 0) | (idx >= size))
        if out.size:
            raise InvalidInput(
                f"{name + INDICES!r} entry {out[0]} is {idx[out[0]]}, outside [0, {size})"
            )
    if idx.size > 1 and not bool(np.all(idx[1:] > idx[:-1])):
        order = np.argsort(idx, kind="stable")
        idx, val = idx[order], val[order]
        dup = np.flatnonzero(idx[1:] == idx[:-1])
        if dup.size:
            raise InvalidInput(f"{name + INDICES!r} repeats index {idx[dup[0]]}")
    bad = _first_nonfinite(val)
    if bad is not None:
        raise InvalidInput(f"{name + VALUES!r} is not finite at entry {bad}")
    # x + 0.0 turns -0.0 into +0.0 and leaves every other value as it is.
    return _read_only(idx), _read_only(np.add(val, np.float32(0.0)))


def _decode_sparse(
    tensors: Mapping[str, TensorEntry],
    metadata: Mapping[str, str],
    base_shapes: Mapping[str, Shape],
) -> dict[str, np.ndarray | SparseDelta]:
    names = _split_sparse_names(tensors)
    _check_names("sparse", names, base_shapes)
    _check_shape_metadata(metadata, names, base_shapes)
    deltas: dict[str, np.ndarray | SparseDelta] = {}
    for name in sorted(names):
        shape = tuple(base_shapes[name])
        idx, val = _decode_sparse_tensor(
            name, math.prod(shape), tensors[name + INDICES], tensors[name + VALUES]
        )
        deltas[name] = SparseDelta(shape=shape, indices=idx, values=val)
    return deltas


def decode_update(data: bytes, base_shapes: Mapping[str, Shape], *, samples: int) -> Update:
    """Decode and validate an update blob against the base model's tensor shapes.

    ``samples`` is the sample count recorded on chain with the update. Raises
    InvalidInput naming the defect: malformed safetensors, wrong or missing names, shapes,
    dtypes, out-of-range or repeated indices, NaN/Inf, or a blob over MAX_BLOB_BYTES.
    """
    _check_samples(samples)
    if len(data) > MAX_BLOB_BYTES:
        raise InvalidInput(f"update of {len(data)} bytes exceeds the limit of {MAX_BLOB_BYTES}")
    parsed = read_tensor_file(data)
    kind = _check_metadata(parsed.metadata)
    if kind == "dense":
        deltas = _decode_dense(parsed.tensors, base_shapes)
        return Update(kind=UpdateKind.DENSE, samples=samples, deltas=deltas)
    deltas = _decode_sparse(parsed.tensors, parsed.metadata, base_shapes)
    return Update(kind=UpdateKind.SPARSE, samples=samples, deltas=deltas)


def load_model(data: bytes) -> dict[str, np.ndarray]:
    """Read a model (safetensors of F32 tensors) as read-only float32 arrays, sorted by name."""
    if len(data) > MAX_BLOB_BYTES:
        raise InvalidInput(f"model of {len(data)} bytes exceeds the limit of {MAX_BLOB_BYTES}")
    parsed = read_tensor_file(data)
    model: dict[str, np.ndarray] = {}
    for name in sorted(parsed.tensors):
        entry = parsed.tensors[name]
        if entry.dtype != "F32":
            raise InvalidInput(f"model tensor {name!r} has dtype {entry.dtype}, expected F32")
        assert entry.array is not None
        model[name] = entry.array
    return model


def save_model(tensors: Mapping[str, np.ndarray]) -> bytes:
    """Serialise float32 tensors canonically: the same tensors always give the same bytes."""
    for name, array in tensors.items():
        if not is_float32(array):
            dtype = getattr(array, "dtype", type(array).__name__)
            raise InvalidInput(f"model tensor {name!r} has dtype {dtype}, expected float32")
    return write_tensor_file(tensors, _MODEL_METADATA)
