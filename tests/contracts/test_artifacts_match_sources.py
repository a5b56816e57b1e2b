"""The checked-in artifacts are exactly what the sources compile to, and load as package data.

This is the only contract test that runs the compiler; the others use the artifacts.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import tomllib
from pathlib import Path

import pytest
import vyper
from eth_utils import is_checksum_address

import contracts
from contracts import (
    CONTRACT_NAMES,
    ELECTION_ADDRESS,
    MEMBERSHIP_ADDRESS,
    MODEL_REGISTRY_ADDRESS,
    load_artifact,
)
from contracts import build as contract_build
from tests.contracts.net import TestNet

ROOT = Path(__file__).resolve().parents[2]

TINY = """#pragma version ~=0.4.3
counter: public(uint256)

@external
def bump():
    self.counter += 1
"""


def test_artifacts_match_sources() -> None:
    assert contract_build.drift() == []


def test_every_source_has_a_predeploy_and_an_artifact() -> None:
    sources = {p.stem for p in contract_build.source_paths()}
    artifacts = {p.stem for p in contract_build.BUILD_DIR.glob("*.json")}
    assert sources == artifacts == set(CONTRACT_NAMES)


def test_check_mode_exit_status(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "Tiny.vy").write_text(TINY)
    monkeypatch.setattr(contract_build, "CONTRACTS_DIR", tmp_path)
    monkeypatch.setattr(contract_build, "BUILD_DIR", tmp_path / "build")
    assert contract_build.main(["--check"]) == 1  # nothing built yet
    assert contract_build.main([]) == 0
    assert contract_build.main(["--check"]) == 0


def test_drift_is_reported_for_edits_orphans_and_missing_artifacts(tmp_path: Path) -> None:
    build_dir = tmp_path / "build"
    source = tmp_path / "Tiny.vy"
    source.write_text(TINY)
    contract_build.build(tmp_path, build_dir)
    assert contract_build.drift(tmp_path, build_dir) == []

    source.write_text(TINY + "\n@external\ndef reset():\n    self.counter = 0\n")
    (problem,) = contract_build.drift(tmp_path, build_dir)
    assert problem.startswith("Tiny.json: differs from a fresh compile in abi, bytecode")

    (build_dir / "Gone.json").write_text("{}")
    assert "Gone.json: no source contracts/Gone.vy" in contract_build.drift(tmp_path, build_dir)

    (build_dir / "Tiny.json").unlink()
    assert "Tiny.json: missing (source Tiny.vy)" in contract_build.drift(tmp_path, build_dir)

    contract_build.build(tmp_path, build_dir)
    assert contract_build.drift(tmp_path, build_dir) == []
    assert not (build_dir / "Gone.json").exists()


@pytest.mark.parametrize("name", CONTRACT_NAMES)
def test_artifact_loads_with_its_provenance(name: str) -> None:
    artifact = load_artifact(name)
    source = (ROOT / "contracts" / f"{name}.vy").read_bytes()
    assert artifact.name == name
    assert artifact.source_sha256 == hashlib.sha256(source).hexdigest()
    assert artifact.vyper_version == vyper.__version__
    assert artifact.evm_version == "prague"
    assert artifact.bytecode.startswith("0x") and artifact.runtime_bytecode.startswith("0x")
    assert len(artifact.runtime_code) > 1000
    assert {item["type"] for item in artifact.abi} >= {"function", "event"}
    with pytest.raises(dataclasses.FrozenInstanceError):
        artifact.name = "x"  # type: ignore[misc]


def test_unknown_artifact_name_is_a_key_error() -> None:
    with pytest.raises(KeyError, match="unknown contract"):
        load_artifact("Nope")


def test_predeploy_addresses_are_the_fixed_checksummed_ones() -> None:
    addresses = [MEMBERSHIP_ADDRESS, MODEL_REGISTRY_ADDRESS, ELECTION_ADDRESS]
    assert [int(a, 16) for a in addresses] == [0x7C01, 0x7C02, 0x7C03]
    assert all(is_checksum_address(a) for a in contracts.PREDEPLOYS.values())
    assert load_artifact("Election").address == ELECTION_ADDRESS


def test_artifacts_ship_as_package_data() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "build/*.json" in config["tool"]["setuptools"]["package-data"]["contracts"]
    stored = json.loads((contract_build.BUILD_DIR / "Membership.json").read_text())
    assert set(stored) == {
        "name",
        "abi",
        "bytecode",
        "runtime_bytecode",
        "source_sha256",
        "vyper_version",
        "evm_version",
    }


@pytest.mark.parametrize("name", CONTRACT_NAMES)
def test_runtime_artifact_is_what_the_constructor_leaves(net: TestNet, name: str) -> None:
    """So writing runtime code at genesis is equivalent to deploying (no immutables)."""
    deployed = net.deploy_fresh(name)
    assert bytes(net.w3.eth.get_code(deployed.address)) == load_artifact(name).runtime_code
    predeployed = net.w3.eth.get_code(contracts.PREDEPLOYS[name])
    assert bytes(predeployed) == load_artifact(name).runtime_code
