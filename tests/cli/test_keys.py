"""`twinchain keys new|show`: standalone keystores and keys added to a network."""

from __future__ import annotations

import json
import shutil
import stat
from pathlib import Path

import pytest
from eth_account import Account

from node import pki
from node.init import NetworkLayout, load_network
from tests.cli.conftest import twinchain


@pytest.fixture
def password_file(tmp_path: Path) -> Path:
    path = tmp_path / "pw.txt"
    path.write_text("correct horse battery staple\n")
    return path


def test_new_then_show_round_trip_and_unlock(tmp_path: Path, password_file: Path) -> None:
    keystore = tmp_path / "me.json"
    code, output = twinchain(
        "keys", "new", "--out", keystore, "--password-file", password_file, "--fast-keys"
    )
    assert code == 0, output
    address = output.strip()
    assert address.startswith("0x") and len(address) == 42
    assert stat.S_IMODE(keystore.stat().st_mode) == 0o600
    key = pki.load_keystore(keystore, "correct horse battery staple")
    assert Account.from_key(key).address == address

    assert twinchain("keys", "show", keystore) == (0, address + "\n")
    code, output = twinchain("keys", "show", keystore, "--password-file", password_file)
    assert code == 0 and output.startswith(address) and "unlocks" in output


def test_show_with_a_wrong_password_exits_1(tmp_path: Path, password_file: Path) -> None:
    keystore = tmp_path / "me.json"
    twinchain("keys", "new", "--out", keystore, "--password-file", password_file, "--fast-keys")
    wrong = tmp_path / "wrong.txt"
    wrong.write_text("incorrect horse\n")
    code, output = twinchain("keys", "show", keystore, "--password-file", wrong)
    assert code == 1
    assert "wrong keystore password" in output


def test_password_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TC_TEST_PASSWORD", "from the environment")
    keystore = tmp_path / "env.json"
    code, output = twinchain(
        "keys", "new", "--out", keystore, "--password-env", "TC_TEST_PASSWORD",
        "--fast-keys", "--json",
    )  # fmt: skip
    assert code == 0, output
    created = json.loads(output)
    assert created["keystore"] == str(keystore)
    code, output = twinchain(
        "keys", "show", keystore, "--password-env", "TC_TEST_PASSWORD", "--json"
    )
    assert code == 0
    assert json.loads(output) == {
        "address": created["address"],
        "keystore": str(keystore),
        "unlocks": True,
    }


def test_new_prompts_for_a_password_when_none_is_given(tmp_path: Path) -> None:
    keystore = tmp_path / "prompted.json"
    code, output = twinchain(
        "keys", "new", "--out", keystore, "--fast-keys", input="s3cret\ns3cret\n"
    )
    assert code == 0, output
    address = output.strip().splitlines()[-1]
    assert Account.from_key(pki.load_keystore(keystore, "s3cret")).address == address


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["show", "{tmp}/missing.json"], "no such file"),
        (["show", "{tmp}/garbage.json"], "not a keystore"),
        (["new", "--out", "{tmp}/exists.json", "--password-env", "X"], "already exists"),
        (["new", "--password-env", "X"], "give either --out FILE or --dir DIR --name NAME"),
        (["new", "--out", "{tmp}/k.json", "--dir", "{tmp}"], "give either --out FILE or --dir"),
        (["show", "{tmp}/exists.json", "--password-env", "TC_UNSET_VARIABLE"], "is not set"),
        (
            ["new", "--out", "{tmp}/k.json", "--password-env", "X", "--password-file", "f"],
            "not both",
        ),
    ],
)
def test_bad_input_exits_2(tmp_path: Path, args: list[str], message: str) -> None:
    (tmp_path / "garbage.json").write_text("[1, 2, 3]")
    (tmp_path / "exists.json").write_text("{}")
    code, output = twinchain("keys", *(a.format(tmp=tmp_path) for a in args))
    assert code == 2, output
    assert message in " ".join(output.split())
    assert not (tmp_path / "k.json").exists()


@pytest.fixture
def own_network(network: NetworkLayout, tmp_path: Path) -> NetworkLayout:
    """A private copy of the session network (these tests add keys to it)."""
    shutil.copytree(network.root, tmp_path / "net")
    return load_network(tmp_path / "net")


def test_new_key_joins_a_network_as_a_member_awaiting_its_role(
    own_network: NetworkLayout,
) -> None:
    code, output = twinchain(
        "keys", "new", "--dir", own_network.root, "--name", "alice", "--role", "publisher",
        "--fast-keys", "--json",
    )  # fmt: skip
    assert code == 0, output
    created = json.loads(output)
    layout = load_network(own_network.root)
    alice = layout.accounts[-1]
    assert (alice.name, alice.role, alice.in_genesis) == ("alice", "PUBLISHER", False)
    assert alice.address == created["address"]
    assert created["password_file"] == str(alice.password_file)
    key = pki.load_keystore(alice.keystore, pki.read_password(alice.password_file, None))
    assert Account.from_key(key).address == alice.address
    assert layout.accounts[:-1] == own_network.accounts


@pytest.mark.parametrize(
    ("name", "role", "message"),
    [
        ("twin-0", "TWIN", "already exists"),
        ("node-1", "TWIN", "already exists"),
        ("bob", "MINER", "role must be one of ADMIN, TWIN, PUBLISHER, AUDITOR"),
        ("Bad Name", "TWIN", "bad key name"),
    ],
)
def test_network_key_refuses_taken_names_and_bad_roles(
    own_network: NetworkLayout, name: str, role: str, message: str
) -> None:
    before = (own_network.root / "network.json").read_text()
    code, output = twinchain(
        "keys", "new", "--dir", own_network.root, "--name", name, "--role", role, "--fast-keys"
    )
    assert code == 2, output
    assert message in output
    assert (own_network.root / "network.json").read_text() == before


def test_network_key_needs_an_initialised_directory(tmp_path: Path) -> None:
    code, output = twinchain("keys", "new", "--dir", tmp_path, "--name", "x", "--fast-keys")
    assert code == 2
    assert "run `twinchain init` first" in " ".join(output.split())
