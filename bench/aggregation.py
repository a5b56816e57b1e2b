"""Federated aggregation: time and memory for a round of 100 updates of a 10M-parameter model.

For dense updates and for 1% sparse top-k updates, and for each strategy, measures what a
miner runs when a round closes -- ``aggregate_bytes``: decode and validate every blob,
aggregate deterministically, write the canonical model and hash it -- and, in the same
run, a plain NumPy baseline on the same decoded deltas (stack the updates, then
``np.mean`` / ``np.median`` / sort-and-mean along the update axis; sparse updates are
densified first, as naive code would). The baseline is neither deterministic across
machines nor bounded in memory; it is the yardstick for the ratio.

    python bench/aggregation.py                       # 10M parameters, 100 updates
    python bench/aggregation.py --params 1000000 --updates 20   # a quick look

Peak memory is what the call allocates above what is live before it (tracemalloc, in a
second, traced run; the update blobs themselves are inputs: 4 GB dense, 80 MB sparse).
CPU seconds are printed next to wall seconds because a shared machine's load inflates
wall time. Figures are copied into ``bench/README.md`` under "Aggregation".
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import platform
import sys
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from registry.fl import (
    SparseDelta,
    Update,
    aggregate_bytes,
    decode_update,
    encode_dense,
    encode_sparse,
    parse_strategy,
    save_model,
)


@dataclass
class Measure:
    """Wall and CPU seconds of one run, and peak traced memory of a second run."""

    wall: float = 0.0
    cpu: float = 0.0
    peak_bytes: int = 0


def measure(action: Callable[[], object]) -> tuple[Measure, object]:
    """Time ``action`` untraced, then run it again under tracemalloc for its peak memory.

    tracemalloc sees every NumPy buffer, so the peak is what the call allocated above what
    was live before it (the inputs), exactly; it slows Python-heavy code, hence two runs.
    """
    result = Measure()
    wall, cpu = time.perf_counter(), time.process_time()
    value = action()
    result.wall = time.perf_counter() - wall
    result.cpu = time.process_time() - cpu
    del value
    tracemalloc.start()
    try:
        start = tracemalloc.get_traced_memory()[0]
        value = action()
        result.peak_bytes = tracemalloc.get_traced_memory()[1] - start
    finally:
        tracemalloc.stop()
    return result, value


def model_shapes(params: int) -> dict[str, tuple[int, ...]]:
    """A transformer-ish layout: two weight matrices and a bias, ``params`` in total."""
    rows = max(1, int(math.sqrt(params * 0.63 / 1.5)))
    first = (rows, int(rows * 1.5))
    second = (int(rows * 1.5), max(1, int(params * 0.37) // int(rows * 1.5)))
    rest = params - math.prod(first) - math.prod(second)
    return {"encoder.weight": first, "decoder.weight": second, "decoder.bias": (rest,)}


def make_deltas(
    pool: np.ndarray, shapes: dict[str, tuple[int, ...]], twin: int
) -> dict[str, np.ndarray]:
    """A twin's deltas: a window of a random pool shifted per twin (cheap, all distinct)."""
    out, offset = {}, twin * 997
    for name, shape in shapes.items():
        size = math.prod(shape)
        out[name] = pool[offset : offset + size].reshape(shape)
        offset += size
    return out


def densify(update: Update, name: str) -> np.ndarray:
    delta = update.deltas[name]
    if not isinstance(delta, SparseDelta):
        return delta
    flat = np.zeros(delta.size, dtype=np.float32)
    flat[delta.indices] = delta.values
    return flat.reshape(delta.shape)


def baseline(
    base: dict[str, np.ndarray], updates: list[Update], strategy: str
) -> dict[str, np.ndarray]:
    """Plain NumPy on stacked deltas, tensor by tensor (float32 result)."""
    parsed = parse_strategy(strategy)
    result = {}
    for name, tensor in base.items():
        stack = np.stack([densify(update, name) for update in updates])
        if parsed.name == "fedavg":
            delta = np.mean(stack, axis=0)
        elif parsed.name == "median":
            delta = np.median(stack, axis=0)
        else:
            trim = parsed.trimmed_per_side(len(updates))
            stack.sort(axis=0)
            delta = np.mean(stack[trim : len(updates) - trim], axis=0)
        del stack
        result[name] = (tensor + delta).astype(np.float32)
    return result


def fmt_s(m: Measure) -> str:
    return f"{m.wall:.2f} s ({m.cpu:.2f} cpu)"


def fmt_mb(m: Measure) -> str:
    return f"{m.peak_bytes / 2**20:,.0f} MiB"


def run_kind(
    kind: str,
    base_bytes: bytes,
    base: dict[str, np.ndarray],
    blobs: list[bytes],
    strategies: list[str],
    with_baseline: bool,
) -> list[str]:
    shapes = {name: tensor.shape for name, tensor in base.items()}
    samples = [twin + 1 for twin in range(len(blobs))]
    rows = []
    for strategy in strategies:
        ours, value = measure(partial(aggregate_bytes, base_bytes, blobs, samples, strategy))
        assert isinstance(value, tuple)
        digest = value[1]
        del value
        row = f"| {kind} | `{strategy}` | {fmt_s(ours)} | {fmt_mb(ours)} |"
        if with_baseline:
            updates = [
                decode_update(b, shapes, samples=s) for b, s in zip(blobs, samples, strict=True)
            ]
            plain, _ = measure(partial(baseline, base, updates, strategy))
            del updates
            ratio = f"{ours.wall / plain.wall:.2f} ({ours.cpu / plain.cpu:.2f} cpu)"
            row += f" {fmt_s(plain)} | {fmt_mb(plain)} | {ratio} |"
        else:
            row += " - | - | - |"
        print(row + f" `{digest[:12]}`", flush=True)
        rows.append(row)
    return rows


def timed(label: str, action: Callable[[], object]) -> None:
    start, cpu = time.perf_counter(), time.process_time()
    action()
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    print(f"{label}: {wall:.2f} s ({cpu:.2f} cpu)", flush=True)


def machine() -> str:
    cpu = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next(line.split(":", 1)[1].strip() for line in info if "model name" in line)
    except (OSError, StopIteration):
        pass
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (
        f"Measured {datetime.date.today().isoformat()}, {platform.machine()}, "
        f"{cpu}, {os.cpu_count()} cores (load average {load}), "
        f"Python {platform.python_version()}, NumPy {np.__version__}."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=int, default=10_000_000)
    parser.add_argument("--updates", type=int, default=100)
    parser.add_argument("--fraction", type=float, default=0.01, help="sparse top-k share")
    parser.add_argument(
        "--strategies", default="fedavg,median,trimmed-mean:0.1", help="comma-separated"
    )
    parser.add_argument("--no-baseline", action="store_true", help="skip plain NumPy")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    strategies = args.strategies.split(",")
    shapes = model_shapes(args.params)
    rng = np.random.default_rng(args.seed)
    base = {name: rng.standard_normal(s, dtype=np.float32) for name, s in shapes.items()}
    base_bytes = save_model(base)
    pool = rng.standard_normal(args.params + args.updates * 997, dtype=np.float32)
    print(machine())
    print(f"model {shapes}, {args.updates} updates, sparse fraction {args.fraction}")
    print(f"trim per side for trimmed-mean:0.1 = {math.floor(Fraction('0.1') * args.updates)}")
    header = (
        "| updates | strategy | `aggregate_bytes` | peak memory | plain NumPy | peak memory "
        "| ours / plain |\n|---|---|---:|---:|---:|---:|---:|"
    )
    rows: list[str] = []
    print(header)
    sparse_blobs = [
        encode_sparse(make_deltas(pool, shapes, twin), fraction=args.fraction)
        for twin in range(args.updates)
    ]
    rows += run_kind(
        f"{args.fraction:.0%} sparse",
        base_bytes,
        base,
        sparse_blobs,
        strategies,
        not args.no_baseline,
    )
    del sparse_blobs
    dense_blobs = [encode_dense(make_deltas(pool, shapes, t)) for t in range(args.updates)]
    rows += run_kind("dense", base_bytes, base, dense_blobs, strategies, not args.no_baseline)
    one = make_deltas(pool, shapes, 0)
    print()
    timed("encode_dense, one update", lambda: encode_dense(one))
    timed(
        f"encode_sparse({args.fraction}), one update",
        lambda: encode_sparse(one, fraction=args.fraction),
    )
    timed(
        f"decode_update x {args.updates}, dense",
        lambda: [decode_update(b, shapes, samples=1) for b in dense_blobs],
    )
    print()
    print(header)
    print("\n".join(rows))
    print()
    print(machine())


if __name__ == "__main__":
    main()
