"""Update blobs round-trip; model files are canonical and interoperate with safetensors."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

from node.errors import InvalidInput
from registry.fl import (
    SparseDelta,
    UpdateKind,
    decode_update,
    encode_dense,
    encode_sparse,
    load_model,
    save_model,
)

ROOT = Path(__file__).resolve().parents[2]

SHAPES = hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5)
FINITE = st.floats(width=32, allow_nan=False, allow_infinity=False)


def _header(blob: bytes) -> dict[str, object]:
    length = int.from_bytes(blob[:8], "little")
    parsed: dict[str, object] = json.loads(blob[8 : 8 + length])
    return parsed


@settings(max_examples=100, deadline=None)
@given(
    shapes=st.dictionaries(st.sampled_from(["a", "b.c", "x::y"]), SHAPES, min_size=1),
    data=st.data(),
)
def test_dense_updates_round_trip_bit_for_bit(
    shapes: dict[str, tuple[int, ...]], data: st.DataObject
) -> None:
    deltas = {n: data.draw(hnp.arrays(np.float32, s, elements=FINITE)) for n, s in shapes.items()}
    update = decode_update(encode_dense(deltas), shapes, samples=7)
    assert update.kind is UpdateKind.DENSE and update.samples == 7
    assert set(update.deltas) == set(deltas)
    for name, array in deltas.items():
        got = update.deltas[name]
        assert isinstance(got, np.ndarray) and not got.flags.writeable
        assert got.shape == array.shape and got.tobytes() == array.tobytes()


@settings(max_examples=100, deadline=None)
@given(
    shapes=st.dictionaries(st.sampled_from(["a", "b.c", "x::y"]), SHAPES, min_size=1),
    data=st.data(),
)
def test_sparse_updates_round_trip_the_top_k_entries(
    shapes: dict[str, tuple[int, ...]], data: st.DataObject
) -> None:
    deltas = {n: data.draw(hnp.arrays(np.float32, s, elements=FINITE)) for n, s in shapes.items()}
    k = data.draw(st.integers(0, 30))
    update = decode_update(encode_sparse(deltas, k=k), shapes, samples=1)
    assert update.kind is UpdateKind.SPARSE
    for name, array in deltas.items():
        got = update.deltas[name]
        assert isinstance(got, SparseDelta) and got.shape == array.shape
        flat = array.reshape(-1)
        assert got.indices.dtype == np.int64 and got.indices.size == min(k, flat.size)
        assert np.all(np.diff(got.indices) > 0)
        np.testing.assert_array_equal(got.values, flat[got.indices])
        if 0 < got.indices.size < flat.size:  # every kept magnitude >= every dropped one
            dropped = np.delete(np.abs(flat), got.indices)
            assert np.abs(got.values).min() >= dropped.max()


def test_top_k_breaks_magnitude_ties_by_lower_index() -> None:
    delta = np.array([0.5, -2.0, 1.0, 2.0, -1.0, 1.0], dtype=np.float32)
    update = decode_update(encode_sparse({"w": delta}, k=3), {"w": (6,)}, samples=1)
    sparse = update.deltas["w"]
    assert isinstance(sparse, SparseDelta)
    assert sparse.indices.tolist() == [1, 2, 3]
    assert sparse.values.tolist() == [-2.0, 1.0, 2.0]


def test_fraction_keeps_ceil_fraction_times_size_and_at_least_one() -> None:
    deltas = {"big": np.arange(1000, dtype=np.float32), "tiny": np.ones(3, dtype=np.float32)}
    update = decode_update(
        encode_sparse(deltas, fraction=0.01), {"big": (1000,), "tiny": (3,)}, samples=1
    )
    big, tiny = update.deltas["big"], update.deltas["tiny"]
    assert isinstance(big, SparseDelta) and isinstance(tiny, SparseDelta)
    assert big.indices.tolist() == list(range(990, 1000))
    assert tiny.indices.tolist() == [0]


def test_sparse_blobs_use_u32_indices_and_document_their_shapes() -> None:
    blob = encode_sparse({"w": np.ones((2, 3), dtype=np.float32)}, k=2)
    header = _header(blob)
    assert header["__metadata__"] == {
        "twinchain.format": "1",
        "twinchain.kind": "sparse",
        "twinchain.shape.w": "2,3",
    }
    assert header["w::indices"] == {"dtype": "U32", "shape": [2], "data_offsets": [0, 8]}
    assert header["w::values"] == {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}


def test_sparse_updates_written_by_safetensors_in_any_index_order_are_accepted() -> None:
    blob = st_save(
        {
            "w::indices": np.array([5, 0, 3], dtype=np.int64),
            "w::values": np.array([-0.0, 1.5, 2.5], dtype=np.float32),
        },
        metadata={"twinchain.format": "1", "twinchain.kind": "sparse", "twinchain.shape.w": "6"},
    )
    sparse = decode_update(blob, {"w": (6,)}, samples=1).deltas["w"]
    assert isinstance(sparse, SparseDelta)
    assert sparse.indices.tolist() == [0, 3, 5]
    assert sparse.values.tobytes() == np.array([1.5, 2.5, 0.0], dtype=np.float32).tobytes()


def test_encoders_refuse_bad_deltas_and_arguments() -> None:
    with pytest.raises(InvalidInput, match=r"delta of tensor 'w' has dtype float64"):
        encode_dense({"w": np.zeros(2)})
    with pytest.raises(InvalidInput, match=r"delta of tensor 'w' is not finite at flat index 1"):
        encode_sparse({"w": np.array([0, np.inf], dtype=np.float32)}, k=1)
    with pytest.raises(InvalidInput, match=r"give exactly one of k and fraction"):
        encode_sparse({}, k=1, fraction=0.5)
    with pytest.raises(InvalidInput, match=r"fraction must be in \(0, 1\]"):
        encode_sparse({}, fraction=0.0)
    with pytest.raises(InvalidInput, match=r"k must be a non-negative integer"):
        encode_sparse({}, k=-1)


# ----------------------------------------------------------------------------- models


def _model() -> dict[str, np.ndarray]:
    return {
        "layer.1.bias": np.array([1.5, -2.0], dtype=np.float32),
        "layer.0.weight": np.arange(6, dtype=np.float32).reshape(2, 3),
        "scale": np.array(0.25, dtype=np.float32),
    }


def test_model_bytes_are_independent_of_insertion_order_and_byte_order() -> None:
    model = _model()
    reordered = {name: model[name] for name in reversed(list(model))}
    big_endian = {name: array.astype(">f4") for name, array in model.items()}
    fortran = {
        name: np.asfortranarray(array) if array.ndim > 1 else array for name, array in model.items()
    }
    blobs = {save_model(m) for m in (model, reordered, big_endian, fortran)}
    assert len(blobs) == 1


# The canonical layout pinned: a change here changes every aggregate digest on chain.
PINNED_MODEL_SHA256 = "a7472eaf6fa829c08c1626f3f1588a807c56fef3fde8148dd8e3bd252555f37b"


def test_model_bytes_have_a_pinned_canonical_layout() -> None:
    blob = save_model(_model())
    length = int.from_bytes(blob[:8], "little")
    assert length % 8 == 0
    assert blob[8 : 8 + length].rstrip(b" ") == (
        b'{"__metadata__":{"twinchain.format":"1","twinchain.kind":"model"},'
        b'"layer.0.weight":{"data_offsets":[0,24],"dtype":"F32","shape":[2,3]},'
        b'"layer.1.bias":{"data_offsets":[24,32],"dtype":"F32","shape":[2]},'
        b'"scale":{"data_offsets":[32,36],"dtype":"F32","shape":[]}}'
    )
    assert hashlib.sha256(blob).hexdigest() == PINNED_MODEL_SHA256


def test_model_bytes_are_the_same_in_another_process() -> None:
    code = (
        "import hashlib; from tests.fl.test_updates import _model; "
        "from registry.fl import save_model; "
        "print(hashlib.sha256(save_model(_model())).hexdigest())"
    )
    env = {**os.environ, "PYTHONHASHSEED": "99"}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == hashlib.sha256(save_model(_model())).hexdigest()


def test_models_interoperate_with_the_safetensors_package() -> None:
    model = _model()
    ours = st_load(save_model(model))
    theirs = load_model(st_save(model))
    for name, array in model.items():
        np.testing.assert_array_equal(ours[name], array)
        np.testing.assert_array_equal(theirs[name], array)
        assert theirs[name].dtype == np.float32 and not theirs[name].flags.writeable
    assert list(load_model(save_model(model))) == sorted(model)


def test_save_model_refuses_other_dtypes() -> None:
    with pytest.raises(InvalidInput, match=r"model tensor 'w' has dtype float16"):
        save_model({"w": np.zeros(2, dtype=np.float16)})


def test_load_model_refuses_other_dtypes() -> None:
    with pytest.raises(InvalidInput, match=r"model tensor 'w' has dtype F16, expected F32"):
        load_model(st_save({"w": np.zeros(2, dtype=np.float16)}))
