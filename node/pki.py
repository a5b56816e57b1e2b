"""Consortium PKI: the CA, miner TLS certificates and Ethereum keystores.

A consortium runs one certificate authority. Every miner holds two keys:

- an **Ethereum account key** (secp256k1), kept in the standard encrypted keystore
  format of eth-account: it signs transactions and consensus votes, and its 20-byte
  address is the miner's *validator address* on chain;
- a **TLS key** (ECDSA P-256) with a certificate issued by the consortium CA that binds
  it to that validator address. The transport (:mod:`node.net`) accepts a peer only if
  its certificate chains to the consortium CA *and* the address it carries is in the
  current miner set.

Certificate profile (X.509 v3, ECDSA with SHA-256):

=================  ===========================================================
CA                 subject ``CN=<name>, O=TwinChain consortium``; BasicConstraints
                   ``CA:TRUE, pathlen:0`` (critical); KeyUsage ``keyCertSign,
                   cRLSign, digitalSignature`` (critical); SKI; AKI
node               subject ``CN=<node name>, O=<CA's O>``; BasicConstraints
                   ``CA:FALSE`` (critical); KeyUsage ``digitalSignature``
                   (critical); ExtendedKeyUsage ``serverAuth, clientAuth``;
                   SubjectAlternativeName ``URI:twinchain:validator:0x<EIP-55>``,
                   ``DNS:localhost``, ``IP:127.0.0.1`` (plus any extra names);
                   SKI; AKI
=================  ===========================================================

The SAN URI is the one authoritative binding; :func:`validator_address_of` reads it and
nothing else. P-256 rather than Ed25519 because every OpenSSL build that Python's
:mod:`ssl` links against negotiates it in TLS 1.3.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import secrets
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from eth_account import Account
from eth_utils.address import is_hex_address, to_canonical_address, to_checksum_address

from node.consensus.types import Address
from node.errors import InvalidInput, NotFound, Unauthorized

CertificateKey = ec.EllipticCurvePrivateKey
"""The key type of the CA and of every node TLS certificate (ECDSA P-256)."""

Keystore = dict[str, Any]
"""A decoded eth-account (Web3 Secret Storage v3) keystore document."""

VALIDATOR_URI_PREFIX = "twinchain:validator:"
"""SAN URI prefix binding a TLS certificate to a validator address."""

CONSORTIUM_ORGANIZATION = "TwinChain consortium"
_CLOCK_SKEW = datetime.timedelta(minutes=5)
_PRIVATE_MODE = 0o600
_PUBLIC_MODE = 0o644


# ---------------------------------------------------------------------------
# Addresses


def parse_address(value: bytes | str) -> Address:
    """Normalise a validator address given as 20 bytes or ``0x``-hex to :class:`Address`.

    Raises :class:`InvalidInput` on anything else.
    """
    if isinstance(value, bytes):
        if len(value) != 20:
            raise InvalidInput(f"validator address must be 20 bytes, got {len(value)}")
        return Address(value)
    if isinstance(value, str) and is_hex_address(value):
        return Address(to_canonical_address(value))
    raise InvalidInput(f"not a validator address: {value!r}")


def validator_uri(address: bytes | str) -> str:
    """The SAN URI that binds a certificate to ``address``."""
    return VALIDATOR_URI_PREFIX + to_checksum_address(parse_address(address))


# ---------------------------------------------------------------------------
# Certificates


def create_ca(
    name: str, *, valid_days: int = 3650, organization: str = CONSORTIUM_ORGANIZATION
) -> tuple[CertificateKey, x509.Certificate]:
    """Create a self-signed consortium CA: a P-256 key and its certificate.

    The CA may sign end-entity certificates only (``pathlen:0``).
    """
    if not name:
        raise InvalidInput("the CA needs a name")
    key = ec.generate_private_key(ec.SECP256R1())
    subject = _name(name, organization)
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _CLOCK_SKEW)
        .not_valid_after(now + datetime.timedelta(days=valid_days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def issue_node_certificate(
    ca_key: CertificateKey,
    ca_cert: x509.Certificate,
    node_name: str,
    validator_address: bytes | str,
    *,
    dns_names: Sequence[str] = ("localhost",),
    ip_addresses: Sequence[str] = ("127.0.0.1",),
    valid_days: int = 825,
) -> tuple[CertificateKey, x509.Certificate]:
    """Issue a TLS key and certificate for one miner, bound to its validator address.

    The certificate is good for both ends of a mutual-TLS connection (serverAuth and
    clientAuth). ``dns_names``/``ip_addresses`` are the host names the node is reached
    at; they are informational for the transport (which identifies peers by address,
    not host name) but keep the certificate usable by ordinary TLS tooling.
    """
    if not node_name:
        raise InvalidInput("the node certificate needs a node name")
    address = parse_address(validator_address)
    if ca_key.public_key() != ca_cert.public_key():
        raise InvalidInput("the CA key does not match the CA certificate")
    try:
        ips = [ipaddress.ip_address(ip) for ip in ip_addresses]
    except ValueError as exc:
        raise InvalidInput(f"bad IP address for the certificate: {exc}") from exc
    organization = _organization_of(ca_cert)
    key = ec.generate_private_key(ec.SECP256R1())
    san: list[x509.GeneralName] = [x509.UniformResourceIdentifier(validator_uri(address))]
    san += [x509.DNSName(d) for d in dns_names]
    san += [x509.IPAddress(ip) for ip in ips]
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(node_name, organization))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _CLOCK_SKEW)
        .not_valid_after(min(now + datetime.timedelta(days=valid_days), _not_after(ca_cert)))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def validator_address_of(cert: x509.Certificate) -> Address:
    """The validator address a node certificate is bound to.

    Reads the single ``twinchain:validator:0x…`` SAN URI. Raises :class:`InvalidInput`
    when there is none, more than one, or it is malformed: such a certificate identifies
    no miner. This does *not* verify the certificate's signature or chain; the TLS layer
    does that.
    """
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound as exc:
        raise InvalidInput("certificate has no SubjectAlternativeName") from exc
    uris = [
        u[len(VALIDATOR_URI_PREFIX) :]
        for u in san.get_values_for_type(x509.UniformResourceIdentifier)
        if u.startswith(VALIDATOR_URI_PREFIX)
    ]
    if len(uris) != 1:
        raise InvalidInput(f"certificate carries {len(uris)} validator addresses, need 1")
    return parse_address(uris[0])


def certificate_pem(cert: x509.Certificate) -> bytes:
    """PEM encoding of ``cert``."""
    return cert.public_bytes(serialization.Encoding.PEM)


# ---------------------------------------------------------------------------
# PEM files


def write_private_key(path: Path, key: CertificateKey, password: bytes | None = None) -> None:
    """Write ``key`` as PKCS#8 PEM with mode 0600, atomically.

    With ``password`` the key is encrypted (best available scheme); without, it is
    written in the clear, as TLS keys usually are, protected by the file mode.
    """
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    data = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )
    write_file_atomic(path, data, _PRIVATE_MODE)


def read_private_key(path: Path, password: bytes | None = None) -> CertificateKey:
    """Read an EC private key written by :func:`write_private_key`.

    Raises :class:`NotFound` if the file is missing, :class:`Unauthorized` on a wrong or
    missing password, :class:`InvalidInput` if it is not an EC private key.
    """
    data = _read(path)
    try:
        key = serialization.load_pem_private_key(data, password)
    except TypeError as exc:  # password given for a clear key, or missing for an encrypted one
        raise Unauthorized(f"{path}: {exc}") from exc
    except ValueError as exc:
        if password is not None and b"ENCRYPTED" in data:
            raise Unauthorized(f"{path}: cannot decrypt the private key") from exc
        raise InvalidInput(f"{path}: not a PEM private key") from exc
    except UnsupportedAlgorithm as exc:
        raise InvalidInput(f"{path}: unsupported key algorithm") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise InvalidInput(f"{path}: expected an EC private key, got {type(key).__name__}")
    return key


def write_certificate(path: Path, cert: x509.Certificate) -> None:
    """Write ``cert`` as PEM (mode 0644), atomically."""
    write_file_atomic(path, certificate_pem(cert), _PUBLIC_MODE)


def read_certificate(path: Path) -> x509.Certificate:
    """Read one PEM certificate; :class:`NotFound` / :class:`InvalidInput` on failure."""
    data = _read(path)
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError as exc:
        raise InvalidInput(f"{path}: not a PEM certificate") from exc


# ---------------------------------------------------------------------------
# Ethereum keystores


def new_account_keystore(
    password: str, *, kdf: Literal["scrypt", "pbkdf2"] = "scrypt", iterations: int | None = None
) -> tuple[Address, Keystore]:
    """Create a fresh Ethereum account and return its address and encrypted keystore.

    ``kdf``/``iterations`` pass through to eth-account; the defaults (scrypt,
    n = 2**18) take about a second and 256 MiB, which is what a long-lived miner key
    deserves. Tests may lower ``iterations``.
    """
    _check_password(password)
    account = Account.create()
    keystore: Keystore = Account.encrypt(account.key, password, kdf=kdf, iterations=iterations)
    return parse_address(account.address), keystore


def write_keystore(path: Path, keystore: Keystore) -> None:
    """Write a keystore document as JSON with mode 0600, atomically."""
    _check_keystore_shape(keystore, path)
    write_file_atomic(path, json.dumps(keystore, indent=2).encode() + b"\n", _PRIVATE_MODE)


def keystore_address(keystore: Keystore) -> Address:
    """The address recorded in a keystore document (not authenticated until decrypted)."""
    raw = keystore.get("address")
    if not isinstance(raw, str):
        raise InvalidInput("keystore has no address field")
    return parse_address(raw if raw.startswith("0x") else "0x" + raw)


def load_keystore(path: Path, password: str) -> bytes:
    """Decrypt the keystore at ``path`` and return the 32-byte private key.

    Raises :class:`NotFound` if the file is missing, :class:`Unauthorized` on a wrong
    password, and :class:`InvalidInput` if the file is not a v3 keystore or its
    ``address`` field does not belong to the decrypted key (a tampered file).
    """
    try:
        keystore = json.loads(_read(path))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"{path}: keystore is not JSON") from exc
    _check_keystore_shape(keystore, path)
    try:
        private_key = bytes(Account.decrypt(keystore, password))
    except ValueError as exc:
        if "MAC mismatch" in str(exc):
            raise Unauthorized(f"{path}: wrong keystore password") from exc
        raise InvalidInput(f"{path}: malformed keystore: {exc}") from exc
    except (KeyError, TypeError, NotImplementedError) as exc:
        raise InvalidInput(f"{path}: malformed keystore: {exc!r}") from exc
    if "address" in keystore:
        derived = parse_address(Account.from_key(private_key).address)
        if keystore_address(keystore) != derived:
            raise InvalidInput(f"{path}: keystore address does not match its key")
    return private_key


def read_password(file: Path | None, env: str | None) -> str:
    """Read a keystore password from ``file`` or else from environment variable ``env``.

    The file wins when both are given. One trailing newline (``\\n`` or ``\\r\\n``) is
    stripped from a file, as left by ``echo``. Raises :class:`InvalidInput` when neither
    source yields a non-empty password, :class:`NotFound` if the file is missing.
    """
    if file is not None:
        text = _read(file).decode("utf-8")
        password = text.removesuffix("\n").removesuffix("\r")
        source = str(file)
    elif env is not None:
        if env not in os.environ:
            raise InvalidInput(f"environment variable {env} is not set")
        password, source = os.environ[env], f"${env}"
    else:
        raise InvalidInput("no password source: give a password file or an env variable")
    if not password:
        raise InvalidInput(f"empty password in {source}")
    return password


# ---------------------------------------------------------------------------
# Files


def write_file_atomic(path: Path, data: bytes, mode: int) -> None:
    """Write ``data`` to ``path`` via a temp file, fsync and rename, with file ``mode``.

    The mode is set on the temp file before any byte is written, so a private key is
    never readable by others, not even for an instant.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)  # the umask may have narrowed it; never widen beyond `mode`
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _read(path: Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError as exc:
        raise NotFound(f"{path}: no such file") from exc
    except IsADirectoryError as exc:
        raise InvalidInput(f"{path}: is a directory") from exc


def _check_password(password: str) -> None:
    if not isinstance(password, str) or not password:
        raise InvalidInput("a keystore password must be a non-empty string")


def _check_keystore_shape(keystore: object, path: Path | None) -> None:
    where = f"{path}: " if path is not None else ""
    if not isinstance(keystore, dict):
        raise InvalidInput(f"{where}keystore must be a JSON object")
    if keystore.get("version") != 3 or not isinstance(keystore.get("crypto"), dict):
        raise InvalidInput(f"{where}not a version 3 keystore")


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _not_after(cert: x509.Certificate) -> datetime.datetime:
    return cert.not_valid_after_utc


def _name(common_name: str, organization: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
        ]
    )


def _organization_of(cert: x509.Certificate) -> str:
    values = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    value = values[0].value if values else CONSORTIUM_ORGANIZATION
    return value if isinstance(value, str) else value.decode()


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )
