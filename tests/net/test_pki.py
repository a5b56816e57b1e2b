"""Consortium PKI: certificate profile, address binding, PEM files and keystores."""

from __future__ import annotations

import ipaddress
import json
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.x509.oid import ExtendedKeyUsageOID

from node import pki
from node.errors import InvalidInput, NotFound, Unauthorized

ADDRESS = bytes.fromhex("5aaeb6053f3e94c9b9a09f33669435e7ef1beaed")
CHECKSUMMED = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"


def test_ca_certificate_may_only_sign_end_entities() -> None:
    _, ca = pki.create_ca("consortium")
    bc = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca and bc.value.path_length == 0
    assert ca.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign


def test_node_certificate_is_bound_to_its_validator_address() -> None:
    ca_key, ca = pki.create_ca("consortium")
    _, cert = pki.issue_node_certificate(ca_key, ca, "miner-1", ADDRESS)
    assert pki.validator_address_of(cert) == ADDRESS
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [
        f"twinchain:validator:{CHECKSUMMED}"
    ]
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert cert.not_valid_after_utc <= ca.not_valid_after_utc


def test_hex_and_byte_addresses_give_the_same_binding() -> None:
    ca_key, ca = pki.create_ca("consortium")
    _, cert = pki.issue_node_certificate(ca_key, ca, "miner-1", CHECKSUMMED.lower())
    assert pki.validator_address_of(cert) == ADDRESS


def test_node_certificate_verifies_against_its_own_ca_only() -> None:
    ca_key, ca = pki.create_ca("consortium")
    _, other = pki.create_ca("other")
    _, cert = pki.issue_node_certificate(ca_key, ca, "miner-1", ADDRESS)
    cert.verify_directly_issued_by(ca)
    with pytest.raises((ValueError, InvalidSignature)):
        cert.verify_directly_issued_by(other)


@pytest.mark.parametrize("bad", [b"\x01" * 19, "0x1234", "not an address", 42])
def test_malformed_validator_address_is_refused(bad: object) -> None:
    ca_key, ca = pki.create_ca("consortium")
    with pytest.raises(InvalidInput):
        pki.issue_node_certificate(ca_key, ca, "miner-1", bad)  # type: ignore[arg-type]


def test_certificate_without_validator_uri_identifies_no_miner() -> None:
    _, ca = pki.create_ca("consortium")
    with pytest.raises(InvalidInput, match="SubjectAlternativeName"):
        pki.validator_address_of(ca)


def test_private_key_file_is_private_and_round_trips(tmp_path: Path) -> None:
    ca_key, ca = pki.create_ca("consortium")
    key, cert = pki.issue_node_certificate(ca_key, ca, "miner-1", ADDRESS)
    pki.write_private_key(tmp_path / "node.key", key)
    pki.write_certificate(tmp_path / "node.pem", cert)
    assert stat.S_IMODE((tmp_path / "node.key").stat().st_mode) == 0o600
    assert pki.read_private_key(tmp_path / "node.key").public_key() == key.public_key()
    assert pki.read_certificate(tmp_path / "node.pem") == cert
    assert not list(tmp_path.glob(".*.tmp"))  # atomic write left no temp file behind


def test_encrypted_private_key_needs_the_right_password(tmp_path: Path) -> None:
    key, _ = pki.create_ca("consortium")
    pki.write_private_key(tmp_path / "ca.key", key, password=b"s3cret")
    assert pki.read_private_key(tmp_path / "ca.key", b"s3cret").public_key() == key.public_key()
    with pytest.raises(Unauthorized):
        pki.read_private_key(tmp_path / "ca.key", b"wrong")
    with pytest.raises(Unauthorized):
        pki.read_private_key(tmp_path / "ca.key")


def test_pem_readers_report_missing_and_garbage_files(tmp_path: Path) -> None:
    with pytest.raises(NotFound):
        pki.read_certificate(tmp_path / "absent.pem")
    (tmp_path / "junk.pem").write_text("junk")
    with pytest.raises(InvalidInput):
        pki.read_certificate(tmp_path / "junk.pem")
    with pytest.raises(InvalidInput):
        pki.read_private_key(tmp_path / "junk.pem")


# --------------------------------------------------------------------------- keystores

FAST_KDF = {"kdf": "pbkdf2", "iterations": 2}


def test_keystore_round_trip_recovers_the_account_key(tmp_path: Path) -> None:
    address, keystore = pki.new_account_keystore("correct horse", **FAST_KDF)  # type: ignore[arg-type]
    path = tmp_path / "miner.json"
    pki.write_keystore(path, keystore)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    private_key = pki.load_keystore(path, "correct horse")
    assert len(private_key) == 32
    from eth_account import Account

    assert pki.parse_address(Account.from_key(private_key).address) == address
    assert pki.keystore_address(keystore) == address


def test_keystore_with_wrong_password_is_unauthorized(tmp_path: Path) -> None:
    _, keystore = pki.new_account_keystore("correct horse", **FAST_KDF)  # type: ignore[arg-type]
    pki.write_keystore(tmp_path / "k.json", keystore)
    with pytest.raises(Unauthorized, match="wrong keystore password"):
        pki.load_keystore(tmp_path / "k.json", "battery staple")


def test_default_scrypt_keystore_loads(tmp_path: Path) -> None:
    _, keystore = pki.new_account_keystore("pw", iterations=2**10)
    pki.write_keystore(tmp_path / "k.json", keystore)
    assert len(pki.load_keystore(tmp_path / "k.json", "pw")) == 32


def _mutations(keystore: dict[str, object]) -> list[object]:
    crypto = dict(keystore["crypto"])  # type: ignore[call-overload]
    return [
        "not json at all",
        [],
        {**keystore, "version": 2},
        {**keystore, "crypto": "nope"},
        {**keystore, "crypto": {k: v for k, v in crypto.items() if k != "kdf"}},
        {**keystore, "crypto": {**crypto, "ciphertext": "zz"}},
        {**keystore, "address": "11" * 20},  # tampered: not the key's address
    ]


@pytest.mark.parametrize("index", range(7))
def test_malformed_keystore_is_invalid_input(tmp_path: Path, index: int) -> None:
    _, keystore = pki.new_account_keystore("pw", **FAST_KDF)  # type: ignore[arg-type]
    bad = _mutations(keystore)[index]
    path = tmp_path / "k.json"
    path.write_text(bad if isinstance(bad, str) else json.dumps(bad))
    with pytest.raises(InvalidInput):
        pki.load_keystore(path, "pw")


def test_missing_keystore_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFound):
        pki.load_keystore(tmp_path / "absent.json", "pw")


def test_empty_keystore_password_is_refused() -> None:
    with pytest.raises(InvalidInput):
        pki.new_account_keystore("")


def test_password_comes_from_file_first_then_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TWINCHAIN_PW", "from-env")
    (tmp_path / "pw").write_text("from-file\n")
    assert pki.read_password(tmp_path / "pw", "TWINCHAIN_PW") == "from-file"
    assert pki.read_password(None, "TWINCHAIN_PW") == "from-env"
    (tmp_path / "crlf").write_bytes(b"pass word \r\n")
    assert pki.read_password(tmp_path / "crlf", None) == "pass word "


def test_missing_or_empty_password_is_invalid_input(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TWINCHAIN_PW_UNSET", raising=False)
    with pytest.raises(InvalidInput):
        pki.read_password(None, None)
    with pytest.raises(InvalidInput):
        pki.read_password(None, "TWINCHAIN_PW_UNSET")
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(InvalidInput):
        pki.read_password(tmp_path / "empty", None)
    with pytest.raises(NotFound):
        pki.read_password(tmp_path / "absent", None)
