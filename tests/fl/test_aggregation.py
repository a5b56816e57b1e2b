"""Aggregation equals a plain NumPy reference, and is the same bits in every run."""

from __future__ import annotations

import importlib
import json
import math
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from node.errors import InvalidInput
from registry.fl import (
    SparseDelta,
    Update,
    UpdateKind,
    aggregate,
    aggregate_bytes,
    check_float_environment,
    decode_update,
    encode_dense,
    encode_sparse,
    load_model,
    save_model,
)
from registry.fl import strategies as fl_strategies
from tests.fl import determinism_case

ROOT = Path(__file__).resolve().parents[2]

# Pinned on x86_64 (AVX-512 and with SIMD dispatch disabled), NumPy 2.4.6. A different
# digest on any machine or NumPy version means miners there would refuse each other's blocks.
PINNED_DIGESTS = {
    "fedavg": "38120d686e98f74d685180fb714fe50dd7fc777438a16a2404fd04f465ba0eee",
    "median": "208e943559cf00561199cfe28ff7ac4e38202cee22d4eaa63945f70307002ee2",
    "trimmed-mean:0.2": "ef64f0e41c9fd25e940e88d193e60ddc167b569bf1605f74122c26536580657c",
}

# ----------------------------------------------------------------------------- reference


def reference_top_k(flat: np.ndarray, k: int) -> list[int]:
    """The k largest |values|, ties to the lower index, written as plainly as possible."""
    ranked = sorted(range(flat.size), key=lambda i: (-abs(float(flat[i])), i))
    return sorted(ranked[:k])


def reference_aggregate(
    base: dict[str, np.ndarray],
    deltas: list[dict[str, np.ndarray]],
    samples: list[int],
    strategy: str,
) -> dict[str, np.ndarray]:
    """base + aggregate(deltas), deltas already dense (zeros where a sparse update is silent)."""
    total = sum(samples)
    result = {}
    for name, tensor in base.items():
        stack = np.stack([d[name].astype(np.float64).reshape(-1) for d in deltas])
        n = stack.shape[0]
        if strategy == "fedavg":
            delta = np.zeros(stack.shape[1])
            for row, count in zip(stack, samples, strict=True):
                delta = delta + (count / total) * row
        elif strategy == "median":
            delta = np.median(stack, axis=0)
        else:
            trim = math.floor(Fraction(strategy.split(":")[1]) * n)
            delta = np.mean(np.sort(stack, axis=0)[trim : n - trim], axis=0)
        new = tensor.astype(np.float64).reshape(-1) + delta
        result[name] = new.astype(np.float32).reshape(tensor.shape)
    return result


# ----------------------------------------------------------------------------- generators

SHAPE = hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=6)
VALUE = st.one_of(
    st.floats(-1e3, 1e3, width=32),
    st.sampled_from([0.0, -0.0, 1.0, -1.0, 0.5, 1e-40]),  # ties, signed zeros, subnormals
)
STRATEGY = st.sampled_from(
    ["fedavg", "median", "trimmed-mean:0.1", "trimmed-mean:0.25", "trimmed-mean:0.49"]
)


@dataclass(frozen=True)
class PlannedUpdate:
    """A twin's deltas and how it sends them: dense (k is None) or its top-k."""

    deltas: dict[str, np.ndarray]
    k: int | None = None


Round = tuple[dict[str, np.ndarray], list[PlannedUpdate], list[int]]


@st.composite
def rounds(draw: st.DrawFn) -> Round:
    """A base model, 1-9 dense or sparse updates and their sample counts."""
    names = draw(st.lists(st.sampled_from(["a", "b.w", "c::x"]), min_size=1, unique=True))
    shapes = {name: draw(SHAPE) for name in names}
    base = {n: draw(hnp.arrays(np.float32, s, elements=VALUE)) for n, s in shapes.items()}
    updates = []
    for _ in range(draw(st.integers(1, 9))):
        deltas = {n: draw(hnp.arrays(np.float32, s, elements=VALUE)) for n, s in shapes.items()}
        k = draw(st.one_of(st.none(), st.integers(0, 20)))
        updates.append(PlannedUpdate(deltas, k))
    samples = draw(
        st.lists(
            st.one_of(st.integers(1, 1000), st.integers(1, 10**30)),
            min_size=len(updates),
            max_size=len(updates),
        )
    )
    return base, updates, samples


def as_blobs_and_dense(
    updates: list[PlannedUpdate],
) -> tuple[list[bytes], list[dict[str, np.ndarray]]]:
    """The update blobs, and each update as the dense deltas the reference aggregates."""
    blobs, dense = [], []
    for update in updates:
        if update.k is None:
            blobs.append(encode_dense(update.deltas))
            dense.append(update.deltas)
            continue
        blobs.append(encode_sparse(update.deltas, k=update.k))
        silent = {}
        for name, array in update.deltas.items():
            flat = np.zeros(array.size, dtype=np.float32)
            chosen = reference_top_k(array.reshape(-1), update.k)
            flat[chosen] = array.reshape(-1)[chosen]
            silent[name] = flat.reshape(array.shape)
        dense.append(silent)
    return blobs, dense


@contextmanager
def kernel_tuning(fedavg_chunk: int, budget: int, grouped: float) -> Iterator[None]:
    with (
        mock.patch.object(fl_strategies, "FEDAVG_CHUNK", fedavg_chunk),
        mock.patch.object(fl_strategies, "ORDER_STAT_BUDGET", budget),
        mock.patch.object(fl_strategies, "GROUPED_MAX_DENSITY", grouped),
    ):
        yield


# ----------------------------------------------------------------------------- properties


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    round_=rounds(),
    strategy=STRATEGY,
    fedavg_chunk=st.sampled_from([1, 3, 1 << 16]),
    budget=st.sampled_from([1, 40, 1 << 25]),
    grouped=st.sampled_from([0.0, 0.25, 1.0]),
)
def test_aggregate_matches_the_numpy_reference(
    round_: Round,
    strategy: str,
    fedavg_chunk: int,
    budget: int,
    grouped: float,
) -> None:
    base, updates, samples = round_
    blobs, dense = as_blobs_and_dense(updates)
    expected = reference_aggregate(base, dense, samples, strategy)
    base_bytes = save_model(base)
    with kernel_tuning(fedavg_chunk, budget, grouped):
        model, digest = aggregate_bytes(base_bytes, blobs, samples, strategy)
        again, digest_again = aggregate_bytes(base_bytes, blobs, samples, strategy)
    assert (model, digest) == (again, digest_again)
    got = load_model(model)
    assert list(got) == sorted(base)
    for name, tensor in expected.items():
        if strategy == "fedavg" or strategy == "median":
            # Same operations in the same order: equal values (+0.0 == -0.0 here).
            np.testing.assert_array_equal(got[name], tensor)
        else:
            # np.mean sums pairwise; we sum sequentially in sorted order.
            scale = float(np.abs(base[name]).max(initial=0)) + 1e3
            np.testing.assert_allclose(got[name], tensor, rtol=1e-6, atol=1e-6 * scale)


@settings(max_examples=60, deadline=None)
@given(round_=rounds(), strategy=STRATEGY.filter(lambda s: s != "fedavg"))
def test_matrix_and_grouped_kernels_give_the_same_bits(round_: Round, strategy: str) -> None:
    base, updates, samples = round_
    sparse_only = [PlannedUpdate(u.deltas, 3 if u.k is None else u.k) for u in updates]
    blobs, _ = as_blobs_and_dense(sparse_only)
    results = set()
    for grouped in (0.0, 1.0):
        with kernel_tuning(1 << 16, 64, grouped):
            results.add(aggregate_bytes(save_model(base), blobs, samples, strategy)[1])
    assert len(results) == 1


# ----------------------------------------------------------------------------- determinism


def _simd_dispatch_targets() -> str:
    """NumPy's runtime-dispatched CPU features active here (AVX2, AVX-512, ...), or ""."""
    umath = importlib.import_module("numpy._core._multiarray_umath")
    active = umath.__cpu_features__
    return " ".join(f for f in umath.__cpu_dispatch__ if active.get(f))


def test_aggregate_digests_agree_across_processes_hash_seeds_and_simd_levels() -> None:
    here = determinism_case.digests()
    # The second child runs NumPy's baseline code paths only (another sort algorithm,
    # narrower SIMD loops), standing in for an older miner's CPU.
    for seed, disabled in (("0", ""), ("4242", _simd_dispatch_targets())):
        env = {**os.environ, "PYTHONHASHSEED": seed, "NPY_DISABLE_CPU_FEATURES": disabled}
        out = subprocess.run(
            [sys.executable, "-m", "tests.fl.determinism_case"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout
        assert json.loads(out) == here


def test_aggregate_digests_match_the_pinned_values() -> None:
    assert determinism_case.digests() == PINNED_DIGESTS


def test_chunk_sizes_never_change_the_bits() -> None:
    base, blobs, samples = determinism_case.round_blobs()
    for strategy in determinism_case.STRATEGIES:
        digests = set()
        for fedavg_chunk, budget in ((1, 1), (5, 100), (1 << 16, 1 << 25)):
            with kernel_tuning(fedavg_chunk, budget, 0.25):
                digests.add(aggregate_bytes(base, blobs, samples, strategy)[1])
        assert len(digests) == 1, strategy


def test_float_environment_of_this_process_is_safe() -> None:
    check_float_environment()


# ----------------------------------------------------------------------------- semantics


def _update(samples: int, **deltas: np.ndarray) -> Update:
    shapes = {name: array.shape for name, array in deltas.items()}
    return decode_update(encode_dense(deltas), shapes, samples=samples)


def test_fedavg_weighs_updates_by_samples() -> None:
    base = {"w": np.zeros(2, dtype=np.float32)}
    one = _update(1, w=np.array([4.0, 0.0], dtype=np.float32))
    three = _update(3, w=np.array([0.0, 8.0], dtype=np.float32))
    assert aggregate(base, [one, three], "fedavg")["w"].tolist() == [1.0, 6.0]


def test_a_sparse_update_counts_as_zero_where_it_is_silent() -> None:
    base = {"w": np.ones(3, dtype=np.float32)}
    delta = np.array([6.0, 6.0, 6.0], dtype=np.float32)
    dense = decode_update(encode_dense({"w": delta}), {"w": (3,)}, samples=1)
    sparse = decode_update(encode_sparse({"w": delta * 2}, k=1), {"w": (3,)}, samples=2)
    assert sparse.kind is UpdateKind.SPARSE
    # fedavg: coordinate 0 gets (6 + 2 * 12) / 3 = 10, the others 6 / 3 = 2
    assert aggregate(base, [dense, sparse], "fedavg")["w"].tolist() == [11.0, 3.0, 3.0]
    # median of two: (6 + 12) / 2 = 9 at coordinate 0, (6 + 0) / 2 = 3 elsewhere
    assert aggregate(base, [dense, sparse], "median")["w"].tolist() == [10.0, 4.0, 4.0]


def test_trimmed_mean_drops_floor_ratio_times_n_from_each_end() -> None:
    base = {"w": np.zeros(1, dtype=np.float32)}
    values = [-100.0, 1.0, 2.0, 3.0, 1000.0]
    updates = [_update(1, w=np.array([v], dtype=np.float32)) for v in values]
    assert aggregate(base, updates, "trimmed-mean:0.2")["w"].tolist() == [2.0]
    # 0.1 * 5 rounds down to 0 trimmed: the plain mean, 906 / 5
    assert aggregate(base, updates, "trimmed-mean:0.1")["w"].tolist() == [float(np.float32(181.2))]


def test_the_result_is_read_only_float32_in_the_base_shape() -> None:
    base = {"w": np.zeros((2, 3), dtype=np.float32)}
    result = aggregate(base, [_update(1, w=np.ones((2, 3), dtype=np.float32))], "median")
    assert result["w"].dtype == np.float32 and result["w"].shape == (2, 3)
    assert not result["w"].flags.writeable


def test_an_aggregate_that_overflows_float32_is_refused() -> None:
    big = np.array([3e38], dtype=np.float32)
    with pytest.raises(InvalidInput, match=r"aggregate of tensor 'w' overflows float32 at index 0"):
        aggregate({"w": big}, [_update(1, w=big)], "fedavg")


def test_a_base_with_nan_is_refused() -> None:
    base = {"w": np.array([np.nan], dtype=np.float32)}
    with pytest.raises(InvalidInput, match=r"base tensor 'w' is not finite"):
        aggregate(base, [_update(1, w=np.zeros(1, dtype=np.float32))], "fedavg")


def test_no_updates_is_refused() -> None:
    with pytest.raises(InvalidInput, match=r"no updates to aggregate"):
        aggregate({"w": np.zeros(1, dtype=np.float32)}, [], "fedavg")


def test_an_update_for_another_base_is_refused() -> None:
    update = Update(
        kind=UpdateKind.SPARSE,
        samples=1,
        deltas={"w": SparseDelta((4,), np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32))},
    )
    with pytest.raises(InvalidInput, match=r"update 0 tensor 'w' does not match the base"):
        aggregate({"w": np.zeros(3, dtype=np.float32)}, [update], "median")
    with pytest.raises(InvalidInput, match=r"update 0 does not carry exactly the base's tensors"):
        aggregate({"v": np.zeros(4, dtype=np.float32)}, [update], "median")


def test_aggregate_bytes_names_the_bad_update_and_checks_counts() -> None:
    base = save_model({"w": np.zeros(2, dtype=np.float32)})
    good = encode_dense({"w": np.ones(2, dtype=np.float32)})
    bad = encode_dense({"w": np.ones(3, dtype=np.float32)})
    with pytest.raises(InvalidInput, match=r"^update 1: tensor 'w' has shape \(3,\)"):
        aggregate_bytes(base, [good, bad], [1, 1], "fedavg")
    with pytest.raises(InvalidInput, match=r"2 updates but 1 sample counts"):
        aggregate_bytes(base, [good, good], [1], "fedavg")
    with pytest.raises(InvalidInput, match=r"unknown strategy 'mean'"):
        aggregate_bytes(base, [good], [1], "mean")
