"""Genesis: schema validation with clear errors, deterministic block 0, contract state."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from eth_abi.abi import decode as abi_decode
from eth_hash.auto import keccak

from node.chain.executor import Executor
from node.chain.genesis import build_genesis, load_genesis, parse_genesis
from node.chain.store import ChainStore
from node.chain.types import (
    ELECTION_ADDRESS,
    MEMBERSHIP_ADDRESS,
    REGISTRY_ADDRESS,
    Role,
    validator_set_hash,
)
from node.consensus.types import ValidatorSet
from node.errors import InvalidInput
from tests.chain.helpers import (
    ADMINS,
    AUDITOR,
    OUTSIDER,
    PUBLISHER,
    SENDERS,
    VALIDATORS,
    genesis_config,
    genesis_document,
    genesis_state,
)

ROOT = Path(__file__).resolve().parents[2]


def selector(signature: str) -> bytes:
    return bytes(keccak(signature.encode())[:4])


def test_genesis_hash_is_identical_in_a_fresh_process() -> None:
    script = (
        "from tests.chain.helpers import genesis_state;print(genesis_state().header.hash().hex())"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == genesis_state().header.hash().hex()


def test_validator_set_hash_matches_the_consensus_definition() -> None:
    members = tuple(k.address for k in VALIDATORS)
    expected = ValidatorSet(epoch=0, members=members).hash()  # type: ignore[arg-type]
    assert validator_set_hash(members) == expected
    assert genesis_state().header.validator_set_hash == expected


def test_canonical_json_parses_back_to_the_same_genesis() -> None:
    config = genesis_config()
    assert parse_genesis(json.loads(json.dumps(config.to_json()))) == config


def test_any_consensus_parameter_changes_the_genesis_hash() -> None:
    doc = genesis_document()
    doc["consensus"] = {**doc["consensus"], "timeouts": {"request": 21, "view_change": 40}}
    other = build_genesis(parse_genesis(doc), predeploys=())
    assert other.header.state_root == genesis_state(with_contracts=False).header.state_root
    assert other.header.hash() != genesis_state(with_contracts=False).header.hash()


def test_load_genesis_reads_a_file(tmp_path: Path) -> None:
    path = tmp_path / "genesis.json"
    path.write_text(json.dumps(genesis_document()))
    assert load_genesis(path) == genesis_config()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"chain_id": None}, "genesis.chain_id: required"),
        ({"chain_id": 0}, r"genesis.chain_id: 0 is outside"),
        ({"chain_id": "7311"}, "genesis.chain_id: expected an integer"),
        ({"chainid": 1}, "genesis: unknown key 'chainid'"),
        ({"validators": []}, "genesis.validators: expected a non-empty list"),
        ({"validators": ["0x1234"]}, r"genesis.validators\[0\]: expected 0x followed by 40"),
        ({"validators": ["0x" + "zz" * 20]}, r"genesis.validators\[0\]: not hexadecimal"),
        ({"validators": [VALIDATORS[0].hex, VALIDATORS[0].hex]}, "validators: duplicate"),
        ({"validators": ["0x" + "00" * 20]}, "zero address cannot hold a role"),
        ({"admin_threshold": 4}, r"genesis.admin_threshold: 4 is outside 1..3"),
        ({"roles": {PUBLISHER.hex: ["OWNER"]}}, "unknown role 'OWNER'"),
        ({"roles": {PUBLISHER.hex: ["MINER"]}}, "MINER is granted by listing in 'validators'"),
        ({"roles": {PUBLISHER.hex: ["ADMIN"]}}, "ADMIN is granted by listing in 'admins'"),
        ({"roles": {PUBLISHER.hex: []}}, "expected a non-empty list of role names"),
        ({"balances": {PUBLISHER.hex: -1}}, "is outside 0.."),
        ({"balances": {PUBLISHER.hex: "lots"}}, "not an integer: 'lots'"),
        ({"balances": {PUBLISHER.hex: 2**256}}, "is outside 0.."),
        ({"gas_limit": 100}, "genesis.gas_limit: 100 is outside"),
        ({"consensus": {"engine": "raft"}}, "genesis.consensus.engine: expected one of"),
        ({"consensus": {"epoch_length": 0}}, "genesis.consensus.epoch_length: 0 is outside"),
        ({"consensus": {"timeout": {}}}, "genesis.consensus: unknown key 'timeout'"),
        ({"consensus": {"timeouts": {"request": 0}}}, "timeouts.request: 0 is outside"),
    ],
)
def test_invalid_genesis_is_rejected_with_the_field_named(
    change: dict[str, Any], message: str
) -> None:
    doc = genesis_document(**change)
    for key, value in change.items():
        if value is None:
            del doc[key]
    with pytest.raises(InvalidInput, match=message):
        parse_genesis(doc)


def test_unreadable_or_non_json_genesis_file_is_invalid_input(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="cannot read genesis file"):
        load_genesis(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(InvalidInput, match="is not JSON"):
        load_genesis(bad)


def test_genesis_state_holds_predeploys_roles_and_balances(tmp_path: Path) -> None:
    with ChainStore.open(tmp_path / "chain.db", genesis_state()) as store:
        executor = Executor(store)
        for address in (MEMBERSHIP_ADDRESS, REGISTRY_ADDRESS, ELECTION_ADDRESS):
            assert executor.code_of(address)
            assert executor.nonce_of(address) == 1
        assert executor.roles_of(VALIDATORS[1].address) == Role.MINER
        assert executor.roles_of(ADMINS[0].address) == Role.ADMIN
        assert executor.roles_of(PUBLISHER.address) == Role.PUBLISHER
        assert executor.roles_of(AUDITOR.address) == Role.AUDITOR
        assert executor.roles_of(SENDERS[0].address) == Role.PUBLISHER | Role.TWIN
        assert executor.roles_of(OUTSIDER.address) == 0
        assert executor.balance_of(OUTSIDER.address) == 10**24
        miners = executor.call(MEMBERSHIP_ADDRESS, selector("minersList()"))
        (listed,) = abi_decode(["address[]"], miners)
        assert [bytes.fromhex(a[2:]) for a in listed] == [k.address for k in VALIDATORS]
        threshold = executor.call(MEMBERSHIP_ADDRESS, selector("threshold()"))
        assert int.from_bytes(threshold, "big") == 2
        membership = executor.call(REGISTRY_ADDRESS, selector("membership()"))
        assert membership[-20:] == MEMBERSHIP_ADDRESS


def test_initializer_revert_is_reported_with_the_contract_name() -> None:
    # A duplicate admin (built by hand: the schema refuses it) is refused on chain.
    config = genesis_config()
    bad = replace(config, admins=(ADMINS[0].address, ADMINS[0].address))
    with pytest.raises(InvalidInput, match=r"genesis: Membership.initialize failed"):
        build_genesis(bad)
