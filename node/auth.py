"""Member authentication: challenge/response sign-in and HMAC-signed bearer tokens.

Theory of operation
-------------------
A member proves it holds its account key, once, and receives a short-lived bearer token:

1. ``challenge(address)`` issues a random single-use nonce bound to that address and
   returns the exact text to sign (:func:`challenge_message`): it names the chain id and
   this node, so a signature obtained by a phishing site for another network or node is
   useless here. Challenges expire after ``challenge_ttl_seconds``; at most
   ``max_challenges`` are outstanding (the oldest are evicted) and at most
   :data:`MAX_CHALLENGES_PER_ADDRESS` per address.
2. The member signs the text with EIP-191 ``personal_sign`` (eth-account
   ``encode_defunct(text=...)``; any Ethereum wallet can do it) and calls
   ``token(address, signature)``. The signature must recover to ``address`` over one of
   its outstanding challenges, which is then consumed (a replayed signature fails), and
   the account must hold at least one role (``roles_of``, read from the Membership
   contract by the caller).
3. The token is ``tc1.<payload>.<mac>``: ``payload`` is base64url (unpadded) canonical
   JSON ``{"v":1,"cid":chain_id,"iss":node,"sub":"0x..","roles":bits,"iat":t,"exp":t}``
   and ``mac`` is base64url HMAC-SHA256 of the ``payload`` text under ``secret``. A
   per-node secret makes tokens valid on one miner; a consortium-wide secret (shared by
   every miner and the REST API replicas) makes them valid everywhere.

``verify(token)`` checks the MAC before reading the payload and raises
:class:`~node.errors.Unauthorized` with one of the precise reasons "no token",
"malformed token", "token signature invalid", "token is for another network" or
"token expired". Roles in a token are those held when it was issued; a revoked member
keeps read access until the token expires (``ttl_seconds``, 15 minutes by default),
while every write is a transaction whose sender's roles the mempool and contracts check
again.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from eth_account import Account
from eth_account.messages import encode_defunct
from eth_typing import Address

from node.errors import Forbidden, InvalidInput, Unauthorized

__all__ = [
    "MAX_CHALLENGES_PER_ADDRESS",
    "TOKEN_PREFIX",
    "AuthService",
    "Principal",
    "bearer_token",
    "challenge_message",
]

TOKEN_PREFIX: Final = "tc1"
#: Outstanding challenges one address may hold (a new one evicts its oldest).
MAX_CHALLENGES_PER_ADDRESS: Final = 4
#: Upper bound on an accepted token's length (a real one is ~250 characters).
_MAX_TOKEN_CHARS: Final = 2048
_MIN_SECRET_BYTES: Final = 16


@dataclass(frozen=True)
class Principal:
    """An authenticated member: who, with which role bits, until when."""

    address: Address
    roles: int
    expires_at: int


@dataclass(frozen=True)
class _Challenge:
    address: Address
    nonce: str
    expires_at: float


def challenge_message(chain_id: int, node_name: str, address: Address, nonce: str) -> str:
    """The exact text a member signs (EIP-191 personal_sign) to obtain a token."""
    return (
        "TwinChain sign-in\n"
        f"Chain ID: {chain_id}\n"
        f"Node: {node_name}\n"
        f"Account: 0x{bytes(address).hex()}\n"
        f"Nonce: {nonce}\n"
        "Signing this proves you hold the account key; it authorises no transaction."
    )


class AuthService:
    """Issues challenges and tokens, and verifies tokens (thread-safe)."""

    def __init__(
        self,
        secret: bytes,
        roles_of: Callable[[Address], int],
        *,
        chain_id: int,
        node_name: str,
        ttl_seconds: int = 900,
        challenge_ttl_seconds: int = 300,
        max_challenges: int = 10_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``secret`` signs tokens (at least 16 bytes; share it across the consortium
        for tokens every miner accepts); ``roles_of`` returns an account's role bits."""
        if len(secret) < _MIN_SECRET_BYTES:
            raise ValueError(f"token secret must be at least {_MIN_SECRET_BYTES} bytes")
        if ttl_seconds <= 0 or challenge_ttl_seconds <= 0 or max_challenges <= 0:
            raise ValueError("ttl_seconds, challenge_ttl_seconds and max_challenges must be > 0")
        self._secret = bytes(secret)
        self._roles_of = roles_of
        self.chain_id = chain_id
        self.node_name = node_name
        self.ttl_seconds = ttl_seconds
        self.challenge_ttl_seconds = challenge_ttl_seconds
        self._max_challenges = max_challenges
        self._clock = clock
        self._challenges: OrderedDict[str, _Challenge] = OrderedDict()  # nonce -> challenge
        self._lock = threading.Lock()

    # ------------------------------------------------------------ sign-in

    def challenge(self, address: Address) -> str:
        """Issue a single-use challenge for ``address``; returns the text to sign."""
        address = _address(address)
        now = self._clock()
        nonce = secrets.token_hex(16)
        with self._lock:
            self._purge(now)
            mine = [c for c in self._challenges.values() if c.address == address]
            for old in mine[: max(0, len(mine) - MAX_CHALLENGES_PER_ADDRESS + 1)]:
                del self._challenges[old.nonce]
            while len(self._challenges) >= self._max_challenges:
                self._challenges.popitem(last=False)
            self._challenges[nonce] = _Challenge(address, nonce, now + self.challenge_ttl_seconds)
        return challenge_message(self.chain_id, self.node_name, address, nonce)

    def token(self, address: Address, signature: bytes | str) -> tuple[str, int]:
        """Exchange a signed challenge for ``(token, expires_at)``.

        Raises Unauthorized if no live challenge of ``address`` is signed by it (the
        challenge is consumed on success, so a replay fails) and Forbidden if the
        account holds no role.
        """
        address = _address(address)
        raw_signature = _signature_bytes(signature)
        now = self._clock()
        with self._lock:
            self._purge(now)
            pending = [c for c in self._challenges.values() if c.address == address]
        if not pending:
            raise Unauthorized(
                f"no outstanding challenge for 0x{bytes(address).hex()} "
                "(expired, already used, or never issued)"
            )
        matched = next((c for c in pending if self._signed_by(c, raw_signature)), None)
        if matched is None:
            raise Unauthorized("challenge signature invalid")
        with self._lock:
            if self._challenges.pop(matched.nonce, None) is None:
                raise Unauthorized("challenge already used")  # lost a race with a replay
        roles = int(self._roles_of(address))
        if roles <= 0:
            raise Forbidden(f"0x{bytes(address).hex()} holds no role on this network")
        expires_at = int(now) + self.ttl_seconds
        return self._issue(address, roles, int(now), expires_at), expires_at

    def _signed_by(self, challenge: _Challenge, signature: bytes) -> bool:
        text = challenge_message(self.chain_id, self.node_name, challenge.address, challenge.nonce)
        try:
            signer = Account.recover_message(encode_defunct(text=text), signature=signature)
        except Exception:  # eth-account/eth-keys raise assorted types on bad signatures
            return False
        return bytes.fromhex(signer[2:]) == bytes(challenge.address)

    def _purge(self, now: float) -> None:
        for nonce in [n for n, c in self._challenges.items() if c.expires_at <= now]:
            del self._challenges[nonce]

    # ------------------------------------------------------------ tokens

    def _issue(self, address: Address, roles: int, issued_at: int, expires_at: int) -> str:
        claims = {
            "v": 1,
            "cid": self.chain_id,
            "iss": self.node_name,
            "sub": "0x" + bytes(address).hex(),
            "roles": roles,
            "iat": issued_at,
            "exp": expires_at,
        }
        payload = _b64encode(json.dumps(claims, sort_keys=True, separators=(",", ":")).encode())
        return f"{TOKEN_PREFIX}.{payload}.{_b64encode(self._mac(payload))}"

    def _mac(self, payload: str) -> bytes:
        return hmac.new(self._secret, payload.encode("ascii"), hashlib.sha256).digest()

    def verify(self, token: str | None) -> Principal:
        """The principal a token names; raises Unauthorized with the precise reason."""
        if not token:
            raise Unauthorized("no token")
        if not isinstance(token, str) or len(token) > _MAX_TOKEN_CHARS or not token.isascii():
            raise Unauthorized("malformed token")
        parts = token.split(".")
        if len(parts) != 3 or parts[0] != TOKEN_PREFIX:
            raise Unauthorized("malformed token")
        _, payload, mac_text = parts
        try:
            mac = _b64decode(mac_text)
        except ValueError:
            raise Unauthorized("malformed token") from None
        if not hmac.compare_digest(mac, self._mac(payload)):
            raise Unauthorized("token signature invalid")
        claims = _claims(payload)
        if claims.chain_id != self.chain_id:
            raise Unauthorized("token is for another network")
        if claims.expires_at <= self._clock():
            raise Unauthorized("token expired")
        return Principal(claims.subject, claims.roles, claims.expires_at)


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header (None when absent).

    A header with another scheme yields an empty string, which :meth:`AuthService.verify`
    reports as "no token" rather than guessing at it.
    """
    if authorization is None:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return ""
    return token.strip()


@dataclass(frozen=True)
class _Claims:
    chain_id: int
    subject: Address
    roles: int
    expires_at: int


def _claims(payload: str) -> _Claims:
    """Decode an authenticated payload; still checked (a shared secret may be misused)."""
    try:
        claims = json.loads(_b64decode(payload))
    except (ValueError, RecursionError):
        raise Unauthorized("malformed token") from None
    if not isinstance(claims, dict) or claims.get("v") != 1:
        raise Unauthorized("malformed token")
    chain_id, roles, expires_at = claims.get("cid"), claims.get("roles"), claims.get("exp")
    subject = claims.get("sub")
    if not (_is_int(chain_id) and _is_int(roles) and _is_int(expires_at)):
        raise Unauthorized("malformed token")
    if not isinstance(subject, str) or len(subject) != 42 or subject[:2] != "0x":
        raise Unauthorized("malformed token")
    try:
        raw_subject = bytes.fromhex(subject[2:])
    except ValueError:
        raise Unauthorized("malformed token") from None
    assert isinstance(chain_id, int) and isinstance(roles, int) and isinstance(expires_at, int)
    return _Claims(chain_id, Address(raw_subject), roles, expires_at)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _address(value: object) -> Address:
    if isinstance(value, bytes) and len(value) == 20:
        return Address(value)
    raise InvalidInput(f"address: expected 20 bytes, got {value!r}")


def _signature_bytes(signature: bytes | str) -> bytes:
    if isinstance(signature, str):
        text = signature[2:] if signature[:2] in ("0x", "0X") else signature
        try:
            signature = bytes.fromhex(text)
        except ValueError:
            raise InvalidInput("signature: not hexadecimal") from None
    if not isinstance(signature, bytes) or len(signature) != 65:
        raise InvalidInput("signature: expected 65 bytes (r || s || v)")
    return signature


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    if not text or any(c not in _B64_ALPHABET for c in text):
        raise ValueError("not base64url")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise ValueError("not base64url") from exc


_B64_ALPHABET: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
