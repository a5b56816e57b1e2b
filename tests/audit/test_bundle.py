"""Evidence bundles from a real chain verify offline with only genesis.json, and altering
any single field of a bundle makes ``audit check`` fail."""

from __future__ import annotations

import copy
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from node.chain.genesis import load_genesis
from registry.audit.bundle import BundleError, check_bundle
from registry.cli import app
from tests.audit.verify_chain import BuiltChain, build_chain

pytestmark = pytest.mark.timeout(600)

runner = CliRunner()


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> BuiltChain:
    return build_chain(tmp_path_factory.mktemp("audit-chain"))


@pytest.fixture(scope="module")
def bundles(chain: BuiltChain, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Bundles written by ``audit proof`` from miner 2's stopped data directory."""
    out = tmp_path_factory.mktemp("bundles")
    data = str(chain.data_dirs[2])
    targets = {
        "late": ["0x" + chain.late_tx.hex()],
        "model": ["--model", "link-quality@production"],
        "round": ["--round", str(chain.round_id)],
    }
    paths = {}
    for name, args in targets.items():
        path = out / f"{name}.json"
        result = runner.invoke(
            app,
            [
                "audit",
                "proof",
                *args,
                "--data-dir",
                data,
                "--genesis",
                str(chain.genesis),
                "-o",
                str(path),
            ],
        )
        assert result.exit_code == 0, result.output
        paths[name] = path
    return paths


def _offline_copy(chain: BuiltChain, bundle: Path, where: Path) -> tuple[Path, Path]:
    """The bundle and genesis.json alone in a directory of their own."""
    where.mkdir()
    return Path(shutil.copy(bundle, where / "bundle.json")), Path(
        shutil.copy(chain.genesis, where / "genesis.json")
    )


def test_bundles_verify_offline_with_only_genesis(
    chain: BuiltChain, bundles: dict[str, Path], tmp_path: Path
) -> None:
    for name, path in bundles.items():
        bundle, genesis = _offline_copy(chain, path, tmp_path / name)
        result = runner.invoke(
            app, ["audit", "check", str(bundle), "--genesis", str(genesis), "--json"]
        )
        assert result.exit_code == 0, result.output
        summary = json.loads(result.stdout)
        assert summary["ok"] is True and summary["chain_id"] == chain.chain_id
    late = json.loads(bundles["late"].read_text())
    assert late["subject"] == {"kind": "transaction", "tx_hash": "0x" + chain.late_tx.hex()}
    # the late transaction was certified by the shrunk set: the bundle proves the change
    members = late["validator_sets"][-1]["members"]
    assert len(members) == 3 and "0x" + chain.removed.hex() not in members
    assert late["validator_sets"][-1]["epoch"] == late["proofs"][0]["block"]["height"] // 5
    model = json.loads(bundles["model"].read_text())
    assert model["subject"]["name"] == "link-quality" and model["subject"]["version"] == 1
    assert model["proofs"][0]["transaction"]["hash"] == "0x" + chain.model_tx.hex()
    round_ = json.loads(bundles["round"].read_text())
    assert [p["transaction"]["hash"] for p in round_["proofs"]][-1] == "0x" + chain.close_tx.hex()


def _leaves(node: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Paths of every leaf, and of every hex dict key (keys are data in state_nodes)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key.startswith("0x"):
                yield (*path, ("key", key))
            yield from _leaves(value, (*path, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _leaves(value, (*path, i))
    else:
        yield path


def _altered(value: Any) -> Any:
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, str) and value.startswith("0x"):
        if len(value) == 2:
            return "0x00"
        return value[:-1] + ("1" if value[-1] == "0" else "0")
    if isinstance(value, str):
        return value + "x"
    return 0


def _mutate(doc: Any, path: tuple[Any, ...]) -> Any:
    out = copy.deepcopy(doc)
    parent = out
    for step in path[:-1]:
        parent = parent[step]
    last = path[-1]
    if isinstance(last, tuple):  # rename a hex key
        key = last[1]
        parent[_altered(key)] = parent.pop(key)
    else:
        parent[last] = _altered(parent[last])
    return out


@pytest.mark.parametrize("name", ["late", "round"])
def test_every_single_field_alteration_fails_the_check(
    chain: BuiltChain, bundles: dict[str, Path], name: str
) -> None:
    genesis = load_genesis(chain.genesis)
    doc = json.loads(bundles[name].read_text())
    check_bundle(doc, genesis)
    paths = list(_leaves(doc))
    assert len(paths) > 50
    survivors = []
    for path in paths:
        try:
            check_bundle(_mutate(doc, path), genesis)
        except BundleError:
            continue
        survivors.append(path)
    assert survivors == []


def test_structural_alterations_fail(chain: BuiltChain, bundles: dict[str, Path]) -> None:
    genesis = load_genesis(chain.genesis)
    doc = json.loads(bundles["late"].read_text())
    dropped = copy.deepcopy(doc)
    dropped["validator_sets"].pop()
    with pytest.raises(BundleError, match="validator_sets"):
        check_bundle(dropped, genesis)
    swapped = copy.deepcopy(doc)
    proof = swapped["proofs"][0]["transaction_proof"]
    proof.append(proof[0])
    with pytest.raises(BundleError, match="not on the path"):
        check_bundle(swapped, genesis)
    extra = copy.deepcopy(doc)
    extra["note"] = "trust me"
    with pytest.raises(BundleError, match="unexpected keys"):
        check_bundle(extra, genesis)


def test_check_fails_with_the_reason_for_another_network(
    chain: BuiltChain, bundles: dict[str, Path], tmp_path: Path
) -> None:
    other = json.loads(chain.genesis.read_text())
    other["chain_id"] += 1
    genesis = tmp_path / "other-genesis.json"
    genesis.write_text(json.dumps(other))
    result = runner.invoke(
        app, ["audit", "check", str(bundles["model"]), "--genesis", str(genesis)]
    )
    assert result.exit_code == 1
    assert "chain_id" in result.stdout
    tampered = json.loads(bundles["model"].read_text())
    tampered["proofs"][0]["receipt"]["status"] = 0
    path = tmp_path / "tampered.json"
    path.write_text(json.dumps(tampered))
    result = runner.invoke(app, ["audit", "check", str(path), "--genesis", str(chain.genesis)])
    assert result.exit_code == 1
    assert "FAILED: proofs[0].receipt" in result.stdout


def test_proof_rejects_bad_input_without_writing(chain: BuiltChain, tmp_path: Path) -> None:
    data = str(chain.data_dirs[0])
    out = tmp_path / "b.json"
    cases = [
        (["0x" + "11" * 32], "is not in this chain store"),
        (["0x1234"], "expected 0x followed by 64 hex digits"),
        (["0x" + chain.late_tx.hex(), "--round", "1"], "exactly one of"),
        (["--model", "no-such-model@1"], "no registered version"),
        (["--model", "link-quality@nightly"], "no alias 'nightly'"),
        (["--round", "99"], "round 99 was never opened"),
    ]
    for args, message in cases:
        result = runner.invoke(app, ["audit", "proof", *args, "--data-dir", data, "-o", str(out)])
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output, (args, result.output)
        assert not out.exists()
    result = runner.invoke(
        app, ["audit", "check", str(tmp_path / "none.json"), "--genesis", str(chain.genesis)]
    )
    assert result.exit_code == 2
