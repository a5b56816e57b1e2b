"""AuthService: challenge/response sign-in and HMAC bearer tokens, without a server."""

from __future__ import annotations

import base64
import json

import pytest
from eth_account import Account
from eth_account.messages import encode_defunct

from node.auth import MAX_CHALLENGES_PER_ADDRESS, AuthService, bearer_token
from node.errors import Forbidden, InvalidInput, Unauthorized
from tests.rpc.conftest import AUDITOR, CHAIN_ID, OUTSIDER, PUBLISHER, Key

ROLES: dict[bytes, int] = {PUBLISHER.raw_address: 12, AUDITOR.raw_address: 16}


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def service(clock: Clock, secret: bytes = b"s" * 32, **kwargs: object) -> AuthService:
    return AuthService(
        secret,
        lambda address: ROLES.get(bytes(address), 0),
        chain_id=CHAIN_ID,
        node_name="miner-1",
        clock=clock,
        **kwargs,  # type: ignore[arg-type]
    )


def sign(account: Key, message: str) -> bytes:
    return bytes(Account.sign_message(encode_defunct(text=message), account.private).signature)


def sign_in(auth: AuthService, account: Key) -> tuple[str, int]:
    message = auth.challenge(account.raw_address)
    return auth.token(account.raw_address, sign(account, message))


def test_signed_challenge_yields_a_token_naming_the_member_and_its_roles() -> None:
    clock = Clock()
    auth = service(clock)
    token, expires_at = sign_in(auth, PUBLISHER)
    assert expires_at == int(clock.now) + 900
    principal = auth.verify(token)
    assert principal.address == PUBLISHER.raw_address
    assert principal.roles == 12
    assert principal.expires_at == expires_at


def test_challenge_text_names_chain_node_account_and_nonce() -> None:
    auth = service(Clock())
    message = auth.challenge(PUBLISHER.raw_address)
    assert f"Chain ID: {CHAIN_ID}" in message
    assert "Node: miner-1" in message
    assert PUBLISHER.address.lower() in message
    assert message != auth.challenge(PUBLISHER.raw_address)  # a fresh nonce each time


def test_replayed_signature_fails() -> None:
    auth = service(Clock())
    message = auth.challenge(PUBLISHER.raw_address)
    signature = sign(PUBLISHER, message)
    auth.token(PUBLISHER.raw_address, signature)
    with pytest.raises(Unauthorized, match="no outstanding challenge"):
        auth.token(PUBLISHER.raw_address, signature)


def test_signature_by_another_key_or_over_other_text_fails() -> None:
    auth = service(Clock())
    message = auth.challenge(PUBLISHER.raw_address)
    with pytest.raises(Unauthorized, match="challenge signature invalid"):
        auth.token(PUBLISHER.raw_address, sign(AUDITOR, message))
    with pytest.raises(Unauthorized, match="challenge signature invalid"):
        auth.token(PUBLISHER.raw_address, sign(PUBLISHER, message + " "))
    # The genuine signature still works: failures do not consume the challenge.
    auth.token(PUBLISHER.raw_address, sign(PUBLISHER, message))


def test_challenge_for_one_node_is_useless_on_another() -> None:
    clock = Clock()
    first = service(clock)
    second = AuthService(
        b"s" * 32, lambda a: 12, chain_id=CHAIN_ID, node_name="miner-2", clock=clock
    )
    message = first.challenge(PUBLISHER.raw_address)
    second.challenge(PUBLISHER.raw_address)
    with pytest.raises(Unauthorized, match="challenge signature invalid"):
        second.token(PUBLISHER.raw_address, sign(PUBLISHER, message))


def test_expired_challenge_fails() -> None:
    clock = Clock()
    auth = service(clock, challenge_ttl_seconds=60)
    message = auth.challenge(PUBLISHER.raw_address)
    clock.now += 61
    with pytest.raises(Unauthorized, match="no outstanding challenge"):
        auth.token(PUBLISHER.raw_address, sign(PUBLISHER, message))


def test_account_without_role_gets_no_token() -> None:
    auth = service(Clock())
    with pytest.raises(Forbidden, match="holds no role"):
        sign_in(auth, OUTSIDER)


def test_outstanding_challenges_are_bounded_per_address_and_overall() -> None:
    auth = service(Clock(), max_challenges=8)
    first = auth.challenge(PUBLISHER.raw_address)
    for _ in range(MAX_CHALLENGES_PER_ADDRESS):
        auth.challenge(PUBLISHER.raw_address)
    with pytest.raises(Unauthorized, match="challenge signature invalid"):
        auth.token(PUBLISHER.raw_address, sign(PUBLISHER, first))  # evicted
    for i in range(20):
        auth.challenge(bytes([i + 1]) * 20)  # type: ignore[arg-type]
    assert len(auth._challenges) <= 8


def test_expired_token_is_refused_with_that_reason() -> None:
    clock = Clock()
    auth = service(clock, ttl_seconds=60)
    token, _ = sign_in(auth, PUBLISHER)
    clock.now += 59
    auth.verify(token)
    clock.now += 1
    with pytest.raises(Unauthorized, match=r"^token expired$"):
        auth.verify(token)


def test_forged_tokens_are_refused() -> None:
    clock = Clock()
    auth = service(clock)
    token, _ = sign_in(auth, AUDITOR)
    prefix, payload, mac = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["roles"] = 0xFF  # escalate
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    with pytest.raises(Unauthorized, match=r"^token signature invalid$"):
        auth.verify(f"{prefix}.{forged}.{mac}")
    other_secret = service(clock, secret=b"x" * 32)
    with pytest.raises(Unauthorized, match=r"^token signature invalid$"):
        other_secret.verify(token)


def test_consortium_secret_makes_tokens_valid_on_every_node() -> None:
    clock = Clock()
    token, _ = sign_in(service(clock), PUBLISHER)
    other_node = AuthService(
        b"s" * 32, lambda a: 0, chain_id=CHAIN_ID, node_name="miner-9", clock=clock
    )
    assert other_node.verify(token).address == PUBLISHER.raw_address
    other_network = AuthService(b"s" * 32, lambda a: 0, chain_id=1, node_name="x", clock=clock)
    with pytest.raises(Unauthorized, match="another network"):
        other_network.verify(token)


@pytest.mark.parametrize(
    "token",
    ["garbage", "tc1.a.b", "tc1..", "tc2.e30.AAAA", "tc1.e30.!!", "a.b.c.d", "tc1." + "A" * 5000],
)
def test_malformed_tokens_are_refused(token: str) -> None:
    with pytest.raises(Unauthorized, match=r"^(malformed token|token signature invalid)$"):
        service(Clock()).verify(token)


def test_missing_token_is_reported_as_such() -> None:
    auth = service(Clock())
    for value in (None, "", bearer_token("Basic dXNlcjpwYXNz"), bearer_token(None)):
        with pytest.raises(Unauthorized, match=r"^no token$"):
            auth.verify(value)


def test_bad_signature_encoding_is_invalid_input() -> None:
    auth = service(Clock())
    auth.challenge(PUBLISHER.raw_address)
    with pytest.raises(InvalidInput):
        auth.token(PUBLISHER.raw_address, b"\x00" * 64)
    with pytest.raises(InvalidInput):
        auth.token(PUBLISHER.raw_address, "0xzz")


def test_short_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 16 bytes"):
        AuthService(b"short", lambda a: 1, chain_id=1, node_name="n")
