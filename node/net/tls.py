"""Mutual TLS 1.3 between miners: contexts, peer identity, and refusal reasons.

Both ends present a certificate issued by the consortium CA (:mod:`node.pki`); the CA is
the *only* trust root. Host names are not checked (``check_hostname`` off): miners are
identified by the validator address their certificate carries, which the transport checks
against the current miner set after the handshake.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from node import pki
from node.consensus.types import Address
from node.errors import InvalidInput

# OpenSSL X509_V_ERR_* codes meaning "this chain does not lead to our CA".
_UNKNOWN_ISSUER_CODES = frozenset({2, 18, 19, 20, 21})


class RefusalReason(StrEnum):
    """Why a connection was refused; also the suffix of the ``refused_*`` counters."""

    UNKNOWN_CA = "unknown_ca"
    BAD_CERTIFICATE = "bad_certificate"
    NOT_A_MINER = "not_a_miner"
    ADDRESS_MISMATCH = "address_mismatch"
    HANDSHAKE_FAILED = "handshake_failed"
    PROTOCOL_ERROR = "protocol_error"
    OVERLOAD = "overload"


@dataclass(frozen=True)
class TlsIdentity:
    """A miner's TLS material on disk: the consortium CA, its certificate and key.

    Paths rather than objects because :mod:`ssl` loads certificate chains from files.
    """

    ca_cert: Path
    cert: Path
    key: Path
    key_password: bytes | None = None

    def address(self) -> Address:
        """The validator address this identity's certificate is bound to."""
        return pki.validator_address_of(pki.read_certificate(self.cert))

    def check(self) -> Address:
        """Verify that the certificate was issued by the CA and matches the key.

        Returns the certificate's validator address. Raises :class:`InvalidInput` with a
        readable message instead of the obscure handshake failures a mismatch would
        cause later.
        """
        ca = pki.read_certificate(self.ca_cert)
        cert = pki.read_certificate(self.cert)
        try:
            cert.verify_directly_issued_by(ca)
        except (ValueError, TypeError, InvalidSignature) as exc:
            raise InvalidInput(f"{self.cert} was not issued by the CA in {self.ca_cert}") from exc
        key = pki.read_private_key(self.key, self.key_password)
        if key.public_key() != cert.public_key():
            raise InvalidInput(f"{self.key} does not match {self.cert}")
        return pki.validator_address_of(cert)

    def server_context(self) -> ssl.SSLContext:
        """Context for accepting connections: TLS 1.3 only, client certificate required."""
        return self._context(server=True)

    def client_context(self) -> ssl.SSLContext:
        """Context for dialing peers: TLS 1.3 only, server certificate required."""
        return self._context(server=False)

    def _context(self, *, server: bool) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server else ssl.PROTOCOL_TLS_CLIENT)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        ctx.check_hostname = False  # peers are identified by validator address, not name
        ctx.verify_mode = ssl.CERT_REQUIRED
        # Trust exactly the consortium CA: load it from the parsed certificate so a
        # bundle file cannot smuggle in extra roots.
        ca = pki.read_certificate(self.ca_cert)
        ctx.load_verify_locations(cadata=pki.certificate_pem(ca).decode())
        ctx.load_cert_chain(self.cert, self.key, password=self.key_password)
        ctx.options |= ssl.OP_NO_TICKET  # no resumption: every connection re-authenticates
        return ctx


def peer_certificate(ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> x509.Certificate:
    """The certificate the peer presented in a completed handshake."""
    der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    if not der:
        raise InvalidInput("peer presented no certificate")
    return x509.load_der_x509_certificate(der)


def peer_address(ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> Address:
    """The validator address in the peer's (already chain-verified) certificate."""
    return pki.validator_address_of(peer_certificate(ssl_object))


def classify_handshake_error(exc: BaseException) -> tuple[RefusalReason | None, str]:
    """Map a failed TLS handshake to a refusal reason and a short detail string.

    The reason is None when the *peer* refused *us* (it sent a TLS alert, typically
    "unknown ca" because our certificate is not from its consortium).
    """
    if isinstance(exc, ssl.SSLCertVerificationError):
        reason = (
            RefusalReason.UNKNOWN_CA
            if exc.verify_code in _UNKNOWN_ISSUER_CODES
            else RefusalReason.BAD_CERTIFICATE
        )
        return reason, exc.verify_message or str(exc)
    if isinstance(exc, ssl.SSLError):
        detail = exc.reason or str(exc)
        if "ALERT" in detail.upper():
            return None, f"peer sent TLS alert {detail}"
        return RefusalReason.HANDSHAKE_FAILED, detail
    if isinstance(exc, TimeoutError):
        return RefusalReason.HANDSHAKE_FAILED, "handshake timed out"
    text = str(exc)
    return RefusalReason.HANDSHAKE_FAILED, f"{type(exc).__name__}: {text}" if text else type(
        exc
    ).__name__
