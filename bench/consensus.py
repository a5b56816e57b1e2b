"""Consensus benchmarks: engine speed, signature cost, traffic per block, recovery, soak.

Prints figures and the machine they ran on; never a test, never fails on timing. Timings
are CPU time of this process (``time.process_time``), so a busy machine inflates them less
than wall time; the soak reports wall time of its worker pool.

    python bench/consensus.py                       # everything except the soak, both engines
    python bench/consensus.py --engine pbft --only traffic,recovery
    python bench/consensus.py --long 10000 --workers 2   # the long soak (>= 10,000 seeds)

Sections:

- ``crypto``   secp256k1 sign / verify (recover) per message, certificate verification;
- ``steps``    engine ``step()`` calls per second with secp256k1 STUBBED (bench only: a
               "signature" is the signer's address plus the sighash, "recovery" slices it
               back, so tampered messages still fail; keccak is still computed);
- ``traffic``  consensus messages and bytes per committed block for n = 4, 7, 10, 13
               (no faults, real signatures);
- ``recovery`` ticks from a proposer crash until two more heights commit;
- ``--long N`` N seeds of the soak matrix (n up to 13, f Byzantine, all scenarios).
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import platform
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from eth_hash.auto import keccak

from node.consensus.certificate import CommitCertificate
from node.consensus.messages import EngineId, Kind, Signer
from node.consensus.sim import SimOptions, run_seed
from node.consensus.sim.report import RunSummary, SimResult, failure_lines
from node.consensus.sim.soak import soak_options
from node.consensus.types import ValidatorSet

SIZES = (4, 7, 10, 13)


def machine() -> str:
    """One line describing where the figures come from."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return (
        f"{cpu}, {os.cpu_count()} cpu(s), Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}"
    )


def _per_call_us(fn: object, number: int) -> float:
    start = time.process_time()
    for _ in range(number):
        fn()  # type: ignore[operator]
    return (time.process_time() - start) / number * 1e6


def bench_crypto() -> None:
    """Signature costs per message and per certificate."""
    signers = [Signer(keccak(b"bench %d" % i)) for i in range(max(SIZES))]
    digest = keccak(b"block")
    msg = signers[0].sign(1, EngineId.PBFT, Kind.PREPARE, 7, 0, digest)
    print("## crypto (secp256k1 via coincurve)")
    sign = _per_call_us(lambda: signers[0].sign(1, EngineId.PBFT, Kind.PREPARE, 7, 0, digest), 3000)
    verify = _per_call_us(lambda: msg.verify(1), 3000)
    encode = _per_call_us(msg.encode, 3000)
    print(f"  sign message        {sign:8.1f} us")
    print(f"  verify message      {verify:8.1f} us  (sighash + ecrecover)")
    print(f"  RLP-encode message  {encode:8.1f} us")
    for n in SIZES:
        vset = ValidatorSet(0, tuple(s.address for s in signers[:n]))
        votes = [s.sign(1, EngineId.PBFT, Kind.COMMIT, 7, 0, digest) for s in signers[:n]]
        cert = CommitCertificate.from_votes(votes[: vset.quorum])
        us = _per_call_us(lambda c=cert, v=vset: c.verify(1, v), 300)  # type: ignore[misc]
        print(f"  verify certificate n={n:<2} (q={vset.quorum:<2}) {us:8.1f} us")


@contextlib.contextmanager
def crypto_stubbed() -> Iterator[None]:
    """BENCH ONLY: replace secp256k1 with a keyed-by-address stand-in (see module doc)."""

    def fake_sign(self: Signer, message_hash: bytes) -> bytes:
        return bytes(self.address) + bytes(message_hash) + b"\x00" * 13

    def fake_recover(message_hash: bytes, signature: bytes) -> bytes | None:
        if len(signature) != 65 or signature[20:52] != message_hash:
            return None
        return signature[:20]

    saved_sign = Signer.sign_hash
    patched = [m for m in list(sys.modules.values()) if _has_recover(m)]
    saved = [(m, m.recover_signer) for m in patched]
    Signer.sign_hash = fake_sign  # type: ignore[method-assign]
    for m in patched:
        m.recover_signer = fake_recover
    try:
        yield
    finally:
        Signer.sign_hash = saved_sign  # type: ignore[method-assign]
        for m, fn in saved:
            m.recover_signer = fn


def _has_recover(module: object) -> bool:
    name = getattr(module, "__name__", "") or ""
    return name.startswith("node.consensus") and hasattr(module, "recover_signer")


def _engine_available(engine: str) -> bool:
    try:
        __import__(f"node.consensus.{engine}")
    except ImportError:
        print(f"  ({engine}: engine not available)")
        return False
    return True


def bench_steps(engine: str) -> None:
    """Engine step() throughput with secp256k1 stubbed."""
    print(f"## steps ({engine}, secp256k1 STUBBED in this section only)")
    if not _engine_available(engine):
        return
    _import_engine_modules(engine)
    cls = _engine_class(engine)
    for n in (4, 7, 13):
        with crypto_stubbed():
            calls, spent = _timed_steps(
                cls,
                SimOptions(
                    engine=engine,
                    n=n,
                    scenario="calm",
                    fault_ticks=0,
                    recovery_ticks=400,
                    tail_ticks=-1,
                ),
            )
        print(
            f"  n={n:<2}  {calls} steps, {calls / spent:10.0f} steps/s inside the engine, "
            f"{spent / max(1, calls) * 1e6:6.1f} us/step"
        )


def _import_engine_modules(engine: str) -> None:
    for mod in list(sys.modules):
        if mod.startswith(f"node.consensus.{engine}"):
            __import__(mod)


def _engine_class(engine: str) -> type:
    if engine == "pbft":
        from node.consensus.pbft import PbftEngine

        return PbftEngine
    from node.consensus.dpos import DposEngine

    return DposEngine


def _timed_steps(cls: type, options: SimOptions) -> tuple[int, float]:
    original = cls.step
    box = [0, 0.0]

    def timed(self: object, message: object) -> None:
        start = time.process_time()
        original(self, message)
        box[1] += time.process_time() - start
        box[0] += 1

    cls.step = timed  # type: ignore[attr-defined]
    try:
        run_seed(options)
    finally:
        cls.step = original  # type: ignore[attr-defined]
    return int(box[0]), float(box[1])


def bench_traffic(engine: str) -> None:
    """Messages and bytes per committed block as n grows (no faults)."""
    print(f"## traffic ({engine}, no faults, 3 seeds x 300 ticks each)")
    if not _engine_available(engine):
        return
    for n in SIZES:
        summary = RunSummary(engine, n, 0)
        start = time.process_time()
        for seed in range(3):
            summary.add(
                run_seed(
                    SimOptions(
                        engine=engine,
                        n=n,
                        seed=seed,
                        scenario="calm",
                        fault_ticks=0,
                        recovery_ticks=300,
                        tail_ticks=-1,
                    )
                )
            )
        per = max(1, summary.heights)
        print(
            f"  n={n:<2} heights/run={summary.heights / 3:6.1f} "
            f"messages/block={summary.messages / per:7.1f} "
            f"bytes/block={summary.bytes / per:9.0f} "
            f"cpu={time.process_time() - start:5.1f}s violations={summary.violations}"
        )


def bench_recovery(engine: str, seeds: int = 20, config: tuple[tuple[str, int], ...] = ()) -> None:
    """Ticks from a proposer crash until two new heights commit."""
    label = " ".join(f"{k}={v}" for k, v in config) or "simulator defaults"
    print(f"## recovery ({engine}, {label}, proposer crash, {seeds} seeds per n)")
    if not _engine_available(engine):
        return
    for n in SIZES:
        ticks: list[int] = []
        violations = 0
        for seed in range(seeds):
            r = run_seed(
                SimOptions(
                    engine=engine,
                    n=n,
                    seed=seed,
                    scenario="proposer-crash",
                    loss=0.0,
                    duplicate=0.0,
                    fault_ticks=300,
                    recovery_ticks=200,
                    config=config,
                )
            )
            violations += len(r.violations)
            rec = int(r.scenario.get("recovery_ticks", -1))
            if rec >= 0:
                ticks.append(rec)
        if ticks:
            print(
                f"  n={n:<2} recovery ticks median={statistics.median(ticks):5.1f} "
                f"max={max(ticks):4d} recovered={len(ticks)}/{seeds} violations={violations}"
            )
        else:
            print(f"  n={n:<2} never recovered in {seeds} seeds, violations={violations}")


def _soak_one(args: tuple[str, int]) -> SimResult:
    engine, index = args
    return run_seed(soak_options(engine, index))


def bench_long(engine: str, seeds: int, workers: int, first: int = 0) -> int:
    """The long soak: runs ``first .. first + seeds - 1`` of the soak matrix, in parallel."""
    print(
        f"## long soak ({engine}, seeds {first}..{first + seeds - 1}, n in {SIZES}, "
        f"{workers} workers)"
    )
    if not _engine_available(engine):
        return 0
    summaries: dict[int, RunSummary] = {}
    failing: list[SimResult] = []
    start = time.perf_counter()
    with multiprocessing.Pool(workers) as pool:
        jobs = [(engine, i) for i in range(first, first + seeds)]
        for done, result in enumerate(pool.imap_unordered(_soak_one, jobs, chunksize=8), 1):
            n = result.options.n
            summaries.setdefault(n, RunSummary(engine, n, result.options.byzantine)).add(result)
            if not result.ok:
                failing.append(result)
                print("\n".join(failure_lines(result)), flush=True)
            if done % 500 == 0:
                print(f"  ... {done}/{seeds} seeds, {time.perf_counter() - start:.0f}s", flush=True)
    for n in sorted(summaries):
        print("\n".join(summaries[n].lines()))
    print(
        f"  total: {seeds} seeds, {sum(len(r.violations) for r in failing)} violations in "
        f"{len(failing)} seeds, {time.perf_counter() - start:.0f}s wall"
    )
    return len(failing)


def main(argv: list[str] | None = None) -> int:
    """Run the selected sections."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--engine", default="pbft,dpos", help="comma list: pbft,dpos")
    p.add_argument("--only", default="crypto,steps,traffic,recovery", help="comma list of sections")
    p.add_argument("--long", type=int, default=0, metavar="SEEDS", help="run the soak")
    p.add_argument("--first", type=int, default=0, help="first soak run index")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = p.parse_args(argv)
    print(f"# consensus bench — {machine()}")
    sections = set(args.only.split(",")) if not args.long else set()
    if "crypto" in sections:
        bench_crypto()
    failures = 0
    for engine in args.engine.split(","):
        if "steps" in sections:
            bench_steps(engine)
        if "traffic" in sections:
            bench_traffic(engine)
        if "recovery" in sections:
            bench_recovery(engine)
            if engine == "pbft":  # and with the engine's own timeouts
                bench_recovery(engine, config=(("base_timeout", 20), ("max_timeout", 320)))
        if args.long:
            failures += bench_long(engine, args.long, args.workers, args.first)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
