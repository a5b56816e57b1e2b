"""Aggregation strategies: the new global model from a base and the round's updates.

Theory of operation
-------------------
When a round closes, a miner proposes ``closeRound(strategy, included_update_ids,
result_digest)``; every other miner recomputes the aggregate from the update blobs and
refuses the block if the SHA-256 of the canonical model file differs. So the aggregate
must be the same **bit for bit** in every process, on every machine. The rules:

1. **Update order** is the order of ``included_update_ids`` on chain; callers pass the
   updates in that order.
2. **Arithmetic** is IEEE-754 binary64 with round-to-nearest-even: each float32 input is
   widened exactly to float64, every operation is one elementwise NumPy ufunc (``add``,
   ``multiply``, ``divide``: correctly rounded, identical under any SIMD width), and the
   result is cast to float32 **once**: ``new = float32(float64(base) + delta)``. A result
   that overflows float32 is refused (InvalidInput), never written as Inf.
3. **Sums are sequential**, in a fixed order, coordinate by coordinate:
   ``acc = 0.0; acc = acc + x_1; acc = acc + x_2; ...``. Never ``np.sum``/``np.mean``
   (pairwise summation whose blocking depends on layout and NumPy version), never BLAS
   (``dot``, ``matmul``, ``einsum``: multithreaded, order varies), never FMA. No threads:
   NumPy's ufuncs and sorts run on the calling thread.
4. **Weights** are ``samples_i / sum(samples)``, computed on Python integers (true division
   of ints is correctly rounded), so they are exact functions of the chain's sample counts.
   The trim count is ``floor(ratio * n)`` in exact rational arithmetic.
5. **Order statistics** come from ``np.sort`` (the values, not the permutation, are used,
   so the sort algorithm does not matter) after mapping ``-0.0`` to ``+0.0``: those two are
   the only distinct float32 bit patterns that compare equal (NaN is refused at decode).
6. **Chunking** of the coordinate axis bounds memory and never changes per-coordinate
   arithmetic: each coordinate sees the same operations in the same order.
7. **Environment**: flush-to-zero, denormals-are-zero or a non-default rounding mode (set
   by some native libraries built with ``-ffast-math``) would change results, so
   :func:`aggregate` probes for them and raises :class:`UnsafeFloatEnvironment`.

Strategies (the strings recorded on chain, parsed strictly by :func:`parse_strategy`):

``fedavg``
    ``delta = sum_i w_i * d_i`` over the updates in order, ``w_i = samples_i / total``.
``median``
    Coordinate-wise median, unweighted: the middle value, or for an even count the mean
    of the two middle values, ``(a + b) / 2`` in float64.
``trimmed-mean:<ratio>``
    Coordinate-wise: sort the n values, drop ``t = floor(ratio * n)`` from each end, and
    average the rest (sequential sum in ascending order, divided by ``n - 2t``).
    ``ratio`` is written ``0.`` then 1 to 6 digits without a trailing zero, below 0.5.

A sparse update counts as delta 0 on every coordinate it does not carry, for every
strategy: in ``fedavg`` its weight still counts in the total, in ``median`` and
``trimmed-mean`` its zeros take part in the order statistics.

Two kernels compute order statistics, chosen per chunk by density; both give the same
bits (a test checks): a matrix kernel (each coordinate's n deltas in one row of a
cache-sized table, rows sorted) and, when all updates in the chunk are sparse and carry
few entries, a grouped kernel that sorts only the carried entries and places the
implicit zeros by counting. Skipping zeros in a sum is
exact: the accumulator starts at +0.0 and no input is -0.0, so it is never -0.0, and
``x + 0.0 == x`` for every other x.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from node.errors import InvalidInput, TwinChainError
from registry.fl.updates import (
    SparseDelta,
    Update,
    decode_update,
    is_float32,
    load_model,
    save_model,
)

#: Coordinates per fedavg step (the float64 accumulator and product are 512 KiB each).
FEDAVG_CHUNK = 1 << 16
#: Bytes of the coordinate-by-update float32 table the order-statistic kernels sort: small
#: enough to stay in cache while it is filled column by column (measured: 2 MiB is ~2x
#: faster than 32 MiB, where the strided fills and the transposition miss the cache).
ORDER_STAT_BUDGET = 2 * 2**20
#: The grouped kernel runs when the carried entries are at most this share of n * chunk.
GROUPED_MAX_DENSITY = 0.25

_STRATEGY = re.compile(r"fedavg|median|trimmed-mean:(0\.[0-9]{0,5}[1-9])")
_F32_ZERO = np.float32(0.0)
_RATIO_SCALE = 10**6


class UnsafeFloatEnvironment(TwinChainError):
    """This process's floating-point mode would make aggregates differ from other miners'."""

    caller_fault = False


@dataclass(frozen=True)
class Strategy:
    """A parsed aggregation strategy; ``str()`` gives back its canonical on-chain text."""

    name: str  # "fedavg", "median" or "trimmed-mean"
    trim_ratio: Fraction = Fraction(0)

    def __post_init__(self) -> None:
        trimmed = self.name == "trimmed-mean"
        if self.name not in ("fedavg", "median", "trimmed-mean"):
            raise InvalidInput(f"unknown strategy {self.name!r}")
        if trimmed and not 0 < self.trim_ratio < Fraction(1, 2):
            raise InvalidInput(f"trim ratio {self.trim_ratio} must be in (0, 0.5)")
        if trimmed and (self.trim_ratio * _RATIO_SCALE).denominator != 1:
            raise InvalidInput(f"trim ratio {self.trim_ratio} has more than 6 decimals")
        if not trimmed and self.trim_ratio:
            raise InvalidInput(f"{self.name} takes no trim ratio")

    def __str__(self) -> str:
        if self.name != "trimmed-mean":
            return self.name
        digits = f"{int(self.trim_ratio * _RATIO_SCALE):06d}".rstrip("0")
        return f"trimmed-mean:0.{digits}"

    def trimmed_per_side(self, n: int) -> int:
        """Values dropped from each end of n sorted values: floor(ratio * n), exactly."""
        return math.floor(self.trim_ratio * n)


def parse_strategy(text: str) -> Strategy:
    """Parse "fedavg", "median" or "trimmed-mean:<ratio>"; anything else is InvalidInput.

    There is one spelling per strategy (``str(parse_strategy(t)) == t``), so the string
    on chain identifies the computation.
    """
    match = _STRATEGY.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise InvalidInput(
            f"unknown strategy {text!r}: expected 'fedavg', 'median' or 'trimmed-mean:<ratio>' "
            "with ratio like 0.1 (no trailing zero)"
        )
    if match.group(1) is None:
        return Strategy(name=text)
    ratio = Fraction(match.group(1))
    if ratio >= Fraction(1, 2):
        raise InvalidInput(f"trim ratio {match.group(1)} must be below 0.5 in {text!r}")
    return Strategy(name="trimmed-mean", trim_ratio=ratio)


def check_float_environment() -> None:
    """Raise UnsafeFloatEnvironment unless float math is IEEE round-to-nearest with subnormals."""
    tiny64 = np.array([2.0**-1022], dtype=np.float64)
    tiny32 = np.array([2.0**-126], dtype=np.float32)
    one = np.array([1.0, -1.0], dtype=np.float64)
    probes = {
        "float64 subnormal results are flushed to zero": (tiny64 * 0.5)[0] == 0.0,
        "float32 subnormal results are flushed to zero": (tiny32 * np.float32(0.5))[0] == 0.0,
        "subnormal inputs are read as zero": (np.array([2.0**-1074]) * 4.0)[0] == 0.0,
        "rounding is not to nearest": bool(
            np.any(one + one * 2.0**-53 != one) or np.any(one + one * 3 * 2.0**-54 == one)
        ),
    }
    for reason, failed in probes.items():
        if failed:
            raise UnsafeFloatEnvironment(f"unsafe floating-point mode: {reason}")


@dataclass(frozen=True, eq=False)
class _Part:
    """One update's delta of one tensor, flattened; sparse parts know their chunk bounds."""

    dense: np.ndarray | None
    indices: np.ndarray | None = None
    values: np.ndarray | None = None
    bounds: np.ndarray | None = None  # searchsorted(indices, chunk starts + [size])


def _parts(deltas: Sequence[np.ndarray | SparseDelta], edges: np.ndarray) -> list[_Part]:
    parts = []
    for delta in deltas:
        if isinstance(delta, SparseDelta):
            bounds = np.searchsorted(delta.indices, edges)
            parts.append(_Part(None, delta.indices, delta.values, bounds))
        else:
            parts.append(_Part(delta.reshape(-1)))
    return parts


def _sparse_slice(part: _Part, chunk: int, lo: int) -> tuple[np.ndarray, np.ndarray]:
    assert part.indices is not None and part.values is not None and part.bounds is not None
    start, end = part.bounds[chunk], part.bounds[chunk + 1]
    return part.indices[start:end] - lo, part.values[start:end]


def _fedavg_chunk(
    parts: list[_Part], weights: list[np.float64], chunk: int, lo: int, hi: int
) -> np.ndarray:
    acc = np.zeros(hi - lo, dtype=np.float64)
    product = np.empty(hi - lo, dtype=np.float64)
    for part, weight in zip(parts, weights, strict=True):
        if part.dense is not None:
            # Widen (exact), then multiply: a plain float64 loop, faster than a casting one.
            np.copyto(product, part.dense[lo:hi])
            np.multiply(product, weight, out=product)
            np.add(acc, product, out=acc)
        else:
            local, values = _sparse_slice(part, chunk, lo)
            acc[local] = np.add(acc[local], np.multiply(values, weight, dtype=np.float64))
    return acc


def _sorted_columns_stat(table: np.ndarray, strategy: Strategy) -> np.ndarray:
    """The statistic of each row of ``table`` (m coordinates x n updates, rows sorted)."""
    n = table.shape[1]
    stat: np.ndarray
    if strategy.name == "median":
        if n % 2:
            stat = table[:, n // 2].astype(np.float64)
        else:
            stat = np.divide(np.add(table[:, n // 2 - 1], table[:, n // 2], dtype=np.float64), 2.0)
        return stat
    trim = strategy.trimmed_per_side(n)
    stat = np.zeros(table.shape[0], dtype=np.float64)
    for column in range(trim, n - trim):
        np.add(stat, table[:, column], out=stat, dtype=np.float64)
    np.divide(stat, float(n - 2 * trim), out=stat)
    return stat


def _matrix_chunk(
    parts: list[_Part], chunk: int, lo: int, hi: int, strategy: Strategy
) -> np.ndarray:
    """Order statistic per coordinate by sorting each coordinate's n deltas.

    The table is coordinates x updates, so each sort runs over one contiguous row (the
    chunk is small enough to stay in cache while its columns are filled).
    """
    table = np.empty((hi - lo, len(parts)), dtype=np.float32)
    for position, part in enumerate(parts):
        column = table[:, position]
        if part.dense is not None:
            np.add(part.dense[lo:hi], _F32_ZERO, out=column)  # copy, mapping -0.0 to +0.0
        else:
            local, values = _sparse_slice(part, chunk, lo)
            column.fill(0.0)
            column[local] = np.add(values, _F32_ZERO)
    table.sort(axis=1)
    return _sorted_columns_stat(table, strategy)


def _sortable_keys(local: np.ndarray, values: np.ndarray) -> np.ndarray:
    """uint64 keys ordering entries by (coordinate, value): float bits made monotone."""
    bits = values.view(np.uint32)
    monotone = np.where(bits >> 31, ~bits, bits | np.uint32(0x80000000))
    return (local.astype(np.uint64) << np.uint64(32)) | monotone.astype(np.uint64)


def _keys_to_entries(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    local = (keys >> np.uint64(32)).astype(np.int64)
    monotone = (keys & np.uint64(0xFFFFFFFF)).astype(np.uint32)
    bits = np.where(monotone >> 31, monotone ^ np.uint32(0x80000000), ~monotone)
    return local, bits.astype(np.uint32).view(np.float32)


@dataclass(frozen=True, eq=False)
class _Groups:
    """Carried entries sorted by (coordinate, value), one group per carried coordinate.

    A coordinate carried by c of the n updates also has n - c implicit zeros, which sort
    between its negative and its non-negative entries. Sorted position p of a group maps
    to rank r among its carried entries: r = p below the negatives' count, else p - zeros.
    """

    values: np.ndarray  # float32, grouped, ascending within a group
    starts: np.ndarray  # index of each group's first entry
    counts: np.ndarray  # carried entries per group
    negatives: np.ndarray  # entries < 0 per group
    zeros: np.ndarray  # implicit zeros per group: n - counts

    def first_rank(self, position: int) -> np.ndarray:
        """Per group, the rank of the first carried entry at sorted position >= position."""
        return np.where(
            position < self.negatives,
            position,
            np.maximum(self.negatives, position - self.zeros),
        )

    def at(self, position: int) -> np.ndarray:
        """Per group, the value at sorted position ``position`` (float64)."""
        rank = np.minimum(self.first_rank(position), self.counts - 1)
        implicit = (position >= self.negatives) & (position < self.negatives + self.zeros)
        picked = self.values[self.starts + rank].astype(np.float64)
        return np.where(implicit, 0.0, picked)

    def kept_sum(self, begin: int, end: int) -> np.ndarray:
        """Per group, the sequential sum of sorted positions [begin, end), ascending.

        Implicit zeros are skipped: adding +0.0 to an accumulator that is never -0.0
        leaves it unchanged, so the sum equals the matrix kernel's bit for bit.
        """
        first = self.starts + self.first_rank(begin)
        length = self.starts + self.first_rank(end) - first
        total = np.zeros(self.starts.size, dtype=np.float64)
        active = np.arange(self.starts.size)
        for offset in range(int(length.max(initial=0))):
            active = active[length[active] > offset]
            total[active] = np.add(total[active], self.values[first[active] + offset])
        return total


def _grouped_chunk(
    parts: list[_Part], chunk: int, lo: int, hi: int, strategy: Strategy
) -> np.ndarray:
    """Order statistic per coordinate from the carried entries of all-sparse updates."""
    n = len(parts)
    slices = [_sparse_slice(part, chunk, lo) for part in parts]
    local = np.concatenate([s[0] for s in slices])
    values = np.add(np.concatenate([s[1] for s in slices]), _F32_ZERO)
    delta = np.zeros(hi - lo, dtype=np.float64)
    if local.size == 0:
        return delta
    keys = _sortable_keys(local, values)
    keys.sort()
    local, values = _keys_to_entries(keys)
    starts = np.flatnonzero(np.diff(local, prepend=-1))
    counts = np.diff(starts, append=local.size)
    negatives = np.add.reduceat((values < 0).astype(np.int64), starts)
    groups = _Groups(values, starts, counts, negatives, n - counts)
    if strategy.name == "median" and n % 2:
        stat = groups.at(n // 2)
    elif strategy.name == "median":
        stat = np.divide(np.add(groups.at(n // 2 - 1), groups.at(n // 2)), 2.0)
    else:
        trim = strategy.trimmed_per_side(n)
        stat = np.divide(groups.kept_sum(trim, n - trim), float(n - 2 * trim))
    delta[local[starts]] = stat
    return delta


def _order_stat_chunk(
    parts: list[_Part], chunk: int, lo: int, hi: int, strategy: Strategy
) -> np.ndarray:
    carried = 0
    for part in parts:
        if part.dense is not None:
            return _matrix_chunk(parts, chunk, lo, hi, strategy)
        assert part.bounds is not None
        carried += int(part.bounds[chunk + 1] - part.bounds[chunk])
    if carried <= GROUPED_MAX_DENSITY * len(parts) * (hi - lo):
        return _grouped_chunk(parts, chunk, lo, hi, strategy)
    return _matrix_chunk(parts, chunk, lo, hi, strategy)


def _aggregate_tensor(
    name: str,
    base: np.ndarray,
    deltas: Sequence[np.ndarray | SparseDelta],
    weights: list[np.float64],
    strategy: Strategy,
) -> np.ndarray:
    flat_base = base.reshape(-1)
    size = flat_base.size
    if strategy.name == "fedavg":
        step = FEDAVG_CHUNK
    else:
        step = max(1, ORDER_STAT_BUDGET // (4 * len(deltas)))
    edges = np.append(np.arange(0, size, step, dtype=np.int64), size)
    parts = _parts(deltas, edges)
    out = np.empty(size, dtype=np.float32)
    for chunk, lo in enumerate(range(0, size, step)):
        hi = min(size, lo + step)
        if strategy.name == "fedavg":
            delta = _fedavg_chunk(parts, weights, chunk, lo, hi)
        else:
            delta = _order_stat_chunk(parts, chunk, lo, hi, strategy)
        with np.errstate(over="ignore"):
            out[lo:hi] = np.add(flat_base[lo:hi], delta, dtype=np.float64)
        finite = np.isfinite(out[lo:hi])
        if not finite.all():
            where = lo + int(np.argmin(finite))
            raise InvalidInput(f"aggregate of tensor {name!r} overflows float32 at index {where}")
    out.flags.writeable = False
    return out.reshape(base.shape)


def _check_inputs(base: Mapping[str, np.ndarray], updates: Sequence[Update]) -> None:
    if not updates:
        raise InvalidInput("no updates to aggregate")
    for name, tensor in base.items():
        if not is_float32(tensor):
            raise InvalidInput(f"base tensor {name!r} has dtype {tensor.dtype}, expected float32")
        if not np.isfinite(tensor).all():
            raise InvalidInput(f"base tensor {name!r} is not finite")
    for position, update in enumerate(updates):
        if isinstance(update.samples, bool) or not isinstance(update.samples, int):
            raise InvalidInput(f"update {position} has a non-integer sample count")
        if update.samples < 1:
            raise InvalidInput(f"update {position} has sample count {update.samples}")
        if set(update.deltas) != set(base):
            raise InvalidInput(f"update {position} does not carry exactly the base's tensors")
        for name, delta in update.deltas.items():
            shape = delta.shape
            if shape != base[name].shape or not (
                isinstance(delta, SparseDelta) or is_float32(delta)
            ):
                raise InvalidInput(f"update {position} tensor {name!r} does not match the base")


def aggregate(
    base: Mapping[str, np.ndarray], updates: Sequence[Update], strategy: str | Strategy
) -> dict[str, np.ndarray]:
    """The new global model: base + the strategy's aggregate of the updates' deltas.

    ``updates`` must be in the order of the update ids on chain (see the module's rules).
    Returns read-only float32 tensors, sorted by name. Raises InvalidInput for an unknown
    strategy, no updates, updates that do not match the base, or a result that overflows
    float32; UnsafeFloatEnvironment if this process's float mode is not IEEE default.
    """
    parsed = strategy if isinstance(strategy, Strategy) else parse_strategy(strategy)
    _check_inputs(base, updates)
    check_float_environment()
    total = sum(update.samples for update in updates)
    weights = [np.float64(update.samples / total) for update in updates]
    result: dict[str, np.ndarray] = {}
    for name in sorted(base):
        deltas = [update.deltas[name] for update in updates]
        result[name] = _aggregate_tensor(name, base[name], deltas, weights, parsed)
    return result


def aggregate_bytes(
    base_bytes: bytes,
    update_bytes_list: Sequence[bytes],
    sample_counts: Sequence[int],
    strategy: str,
) -> tuple[bytes, str]:
    """Decode, validate and aggregate blobs; return the canonical model file and its SHA-256.

    This is what a miner runs to propose or check a round's aggregate: ``update_bytes_list``
    and ``sample_counts`` follow the order of the included update ids on chain. The digest
    is lowercase hex (the artifact store writes it as ``sha256:<hex>``).
    """
    parsed = parse_strategy(strategy)
    if len(update_bytes_list) != len(sample_counts):
        raise InvalidInput(
            f"{len(update_bytes_list)} updates but {len(sample_counts)} sample counts"
        )
    base = load_model(base_bytes)
    shapes = {name: tensor.shape for name, tensor in base.items()}
    updates = []
    for position, (blob, samples) in enumerate(zip(update_bytes_list, sample_counts, strict=True)):
        try:
            updates.append(decode_update(blob, shapes, samples=samples))
        except InvalidInput as exc:
            raise InvalidInput(f"update {position}: {exc}") from exc
    model = save_model(aggregate(base, updates, parsed))
    return model, hashlib.sha256(model).hexdigest()
