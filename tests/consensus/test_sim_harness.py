"""The simulator's own machinery: PRNG, blocks, network faults, options, determinism.

The engine-independent parts are tested against a toy engine
(:mod:`tests.consensus.sim_toy_engine`), including deliberately broken variants: a
simulator that never reports anything proves nothing, so these tests show it catches an
unsafe quorum, a replica that forgets its votes, and a replica that votes for invalid
blocks.
"""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from dataclasses import fields
from pathlib import Path

import pytest

from node.consensus.messages import EngineId, Kind
from node.consensus.sim import SimOptions, run_seed
from node.consensus.sim.__main__ import build_parser, main, options_from
from node.consensus.sim.blocks import (
    BlockBook,
    decode_block,
    intrinsic_info,
    make_block,
    twin_block,
)
from node.consensus.sim.cluster import validator_signer
from node.consensus.sim.network import LinkFaults, Network
from node.consensus.sim.rng import SimRng
from node.consensus.types import ZERO_HASH, Address
from tests.consensus.sim_toy_engine import register_toy

ROOT = Path(__file__).resolve().parents[2]
TOY = register_toy("toy")
TOY_UNSAFE_QUORUM = register_toy("toy-unsafe-quorum", quorum=1)
TOY_FORGETFUL = register_toy("toy-forgetful", persist=False)
TOY_GULLIBLE = register_toy("toy-gullible", vote_invalid=True)
PROPOSER = Address(b"\x01" * 20)


# -- the PRNG --------------------------------------------------------------------------


def test_rng_is_a_pure_function_of_the_seed() -> None:
    a, b = SimRng(42), SimRng(42)
    assert [a.next_u64() for _ in range(100)] == [b.next_u64() for _ in range(100)]
    assert SimRng(42).next_u64() != SimRng(43).next_u64()


def test_rng_matches_the_splitmix64_reference_vector() -> None:
    # First outputs of SplitMix64 seeded with 0 (Vigna's reference implementation).
    rng = SimRng(0)
    assert rng.next_u64() == 0xE220A8397B1DCDAF
    assert rng.next_u64() == 0x6E789E6AA1B965F4


def test_rng_below_is_unbiased_enough_and_in_range() -> None:
    rng = SimRng(7)
    counts = Counter(rng.below(6) for _ in range(60_000))
    assert set(counts) == set(range(6))
    assert all(9_000 < c < 11_000 for c in counts.values())


def test_rng_shuffle_and_sample_are_permutations() -> None:
    rng = SimRng(1)
    items = list(range(20))
    rng.shuffle(items)
    assert sorted(items) == list(range(20))
    assert len(set(rng.sample(range(10), 4))) == 4


# -- blocks ----------------------------------------------------------------------------


def test_block_book_checks_parent_linkage_and_the_invalid_mark() -> None:
    book = BlockBook()
    b1 = make_block(1, ZERO_HASH, PROPOSER, b"one")
    info = book.validate(b1)
    assert info is not None and info.height == 1
    assert book.validate(make_block(2, info.hash, PROPOSER, b"two")) is not None
    assert book.validate(make_block(3, ZERO_HASH, PROPOSER, b"x")) is None  # wrong parent
    assert book.validate(make_block(2, info.hash, PROPOSER, b"INVALID")) is None
    assert book.validate(b"\xc0") is None


def test_twin_block_has_the_same_length_and_a_different_hash() -> None:
    block = make_block(5, ZERO_HASH, PROPOSER, b"data")
    twin = twin_block(block)
    assert twin is not None and len(twin) == len(block) and twin != block
    original, other = decode_block(block), decode_block(twin)
    assert original is not None and other is not None
    assert (original.height, original.parent_hash) == (other.height, other.parent_hash)
    assert intrinsic_info(twin) is not None


# -- network ---------------------------------------------------------------------------


def _drain(net: Network, until: int) -> list[int]:
    got = []
    for now in range(until):
        while (env := net.pop_due(now)) is not None:
            got.append(env.dst)
    return got


def _msg() -> object:
    return validator_signer(0).sign(1, EngineId.PBFT, Kind.PREPARE, 1, 0, b"\x11" * 32)


def test_network_delivers_within_the_delay_bounds() -> None:
    net = Network(SimRng(3), LinkFaults(delay_min=2, delay_max=5))
    for _ in range(200):
        net.send(0, 1, _msg(), 100, now=0)  # type: ignore[arg-type]
    assert _drain(net, 2) == []
    assert len(_drain(net, 6)) == 200


def test_network_loses_and_duplicates_at_the_configured_rates() -> None:
    net = Network(SimRng(4), LinkFaults(loss=0.3, duplicate=0.2))
    for _ in range(2000):
        net.send(0, 1, _msg(), 100, now=0)  # type: ignore[arg-type]
    delivered = len(_drain(net, 10))
    assert 0.25 < net.stats.dropped / 2000 < 0.35
    assert delivered == 2000 - net.stats.dropped + net.stats.duplicated


def test_partition_cuts_across_groups_until_healed() -> None:
    net = Network(SimRng(5), LinkFaults())
    net.partition([[0, 1], [2, 3]])
    net.send(0, 1, _msg(), 1, now=0)  # type: ignore[arg-type]
    net.send(0, 2, _msg(), 1, now=0)  # type: ignore[arg-type]
    net.heal()
    net.send(0, 3, _msg(), 1, now=0)  # type: ignore[arg-type]
    assert sorted(_drain(net, 10)) == [1, 3]


# -- options and the CLI ---------------------------------------------------------------


def test_replay_command_parses_back_to_the_same_options() -> None:
    options = SimOptions(
        engine="pbft",
        n=7,
        seed=99,
        byzantine=2,
        behaviours="equivocate,replay",
        scenario="storm",
        loss=0.1,
        config=(("base_timeout", 12),),
    )
    parsed = options_from(build_parser().parse_args(options.argv()))
    assert parsed == options
    assert options.command().startswith("python -m node.consensus.sim --engine pbft --n 7")


def test_every_option_round_trips_through_the_command_line() -> None:
    changed = {
        f.name: (f.default + 1 if isinstance(f.default, int) else f.default)
        for f in fields(SimOptions)
        if isinstance(f.default, int | float) and f.name not in ("n",)
    }
    changed["loss"], changed["duplicate"], changed["skew"] = 0.25, 0.125, 0.5
    options = SimOptions(n=7, **changed)
    assert options_from(build_parser().parse_args(options.argv())) == options


def test_cli_prints_a_summary_and_exits_zero(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--engine", TOY, "--scenario", "calm", "--seeds", "2"]) == 0
    out = capsys.readouterr().out
    assert f"engine={TOY} n=4 f=1 byzantine=0 seeds=2 violations=0" in out
    assert "messages/block=" in out


def test_cli_prints_the_replay_command_of_a_failing_seed(
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["--engine", TOY_FORGETFUL, "--seed", "3", "--crashes", "3", "--partitions", "0"]
    assert main(argv) == 1
    out = capsys.readouterr().out
    assert "replay: python -m node.consensus.sim --engine toy-forgetful --n 4 --seed 3" in out


# -- a correct engine passes, broken ones are caught -----------------------------------


@pytest.mark.parametrize("seed", range(3))
def test_toy_engine_runs_clean_without_faults(seed: int) -> None:
    result = run_seed(SimOptions(engine=TOY, seed=seed, scenario="calm", n=4))
    assert result.ok, result.violations
    assert result.heights > 20 and result.min_heights >= result.heights - 1


def test_forgeries_replays_and_bad_sync_do_not_hurt_a_correct_engine() -> None:
    options = SimOptions(
        engine=TOY, n=7, byzantine=2, behaviours="forge,replay,badsync", scenario="calm"
    )
    result = run_seed(options)
    assert result.ok, result.violations
    assert result.heights > 20


def test_unsafe_quorum_is_caught_as_an_agreement_or_certificate_violation() -> None:
    options = SimOptions(engine=TOY_UNSAFE_QUORUM, byzantine=1, behaviours="equivocate")
    found = {v.invariant for s in range(5) for v in run_seed(options.with_seed(s)).violations}
    assert "certificate" in found


def test_replica_that_forgets_its_votes_is_caught_double_signing() -> None:
    options = SimOptions(engine=TOY_FORGETFUL, crashes=3, partitions=0)
    found = {v.invariant for s in range(5) for v in run_seed(options.with_seed(s)).violations}
    assert "honest-equivocation" in found


def test_voting_for_invalid_blocks_is_caught_as_a_validity_violation() -> None:
    options = SimOptions(
        engine=TOY_GULLIBLE, byzantine=1, behaviours="invalid", scenario="calm", n=4
    )
    found = {v.invariant for s in range(10) for v in run_seed(options.with_seed(s)).violations}
    assert "validity" in found


def test_evidence_is_required_for_equivocations_that_reach_one_replica() -> None:
    # The toy engine does report evidence; equivocations must be reached and caught.
    options = SimOptions(
        engine=TOY, n=7, byzantine=2, behaviours="equivocate,conflict", scenario="calm"
    )
    reached = caught = 0
    for s in range(6):
        result = run_seed(options.with_seed(s))
        reached += result.equivocations_reached
        caught += result.equivocations_caught
        assert not [v for v in result.violations if v.invariant.endswith("equivocation")]
    assert reached > 0 and caught == reached


# -- determinism -----------------------------------------------------------------------


def test_same_seed_same_run() -> None:
    options = SimOptions(engine=TOY, seed=11, byzantine=1)
    assert run_seed(options).fingerprint == run_seed(options).fingerprint
    assert run_seed(options).fingerprint != run_seed(options.with_seed(12)).fingerprint


@pytest.mark.parametrize("engine", ["pbft", "dpos"])
def test_a_seed_replays_byte_for_byte_across_processes_and_hash_seeds(engine: str) -> None:
    pytest.importorskip(f"node.consensus.{engine}")
    code = (
        "from node.consensus.sim import SimOptions, run_seed;"
        f"r = run_seed(SimOptions(engine={engine!r}, n=4, seed=5, byzantine=1,"
        " fault_ticks=60, recovery_ticks=120));"
        "print(r.fingerprint, r.heights, len(r.violations))"
    )
    outs = {
        subprocess.run(
            [sys.executable, "-c", code],
            cwd=ROOT,
            env={"PYTHONHASHSEED": hash_seed, "PATH": ""},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for hash_seed in ("1", "2")
    }
    assert len(outs) == 1, outs


def test_pbft_new_view_reproposals_reach_the_honest_equivocation_check() -> None:
    pytest.importorskip("node.consensus.pbft")
    from node.consensus.sim.cluster import Simulation

    seen: list[int] = []
    for seed in range(4):
        sim = Simulation(SimOptions(engine="pbft", seed=seed, scenario="storm", fault_ticks=120))
        unwrap = sim.ctx.unwrap
        assert unwrap is not None

        def counting(msg: object, unwrap: object = unwrap) -> list[object]:
            out = unwrap(msg)  # type: ignore[operator]
            seen.extend(m.kind for m in out)
            return out  # type: ignore[no-any-return]

        sim.ctx.unwrap = counting  # type: ignore[assignment]
        assert sim.run().ok
    assert seen and set(seen) == {Kind.PRE_PREPARE}
