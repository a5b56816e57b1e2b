"""The artifact digest form: ``sha256:<64 lowercase hex>``, nothing else."""

from __future__ import annotations

import hashlib
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.blobs import ArtifactDigest, parse_digest
from node.errors import InvalidInput

EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
CANONICAL = re.compile(r"sha256:[0-9a-f]{64}")


def test_digest_of_bytes_prints_in_oci_form() -> None:
    digest = ArtifactDigest.of(b"")
    assert str(digest) == f"sha256:{EMPTY_SHA256}"
    assert digest.hex == EMPTY_SHA256
    assert digest.raw == hashlib.sha256(b"").digest()
    assert repr(digest) == f"ArtifactDigest('sha256:{EMPTY_SHA256}')"


@given(st.binary(min_size=32, max_size=32))
def test_parse_inverts_str(raw: bytes) -> None:
    digest = ArtifactDigest(raw)
    assert parse_digest(str(digest)) == digest
    assert hash(parse_digest(str(digest))) == hash(digest)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "sha256:",
        EMPTY_SHA256,  # no algorithm
        f"sha256:{EMPTY_SHA256.upper()}",  # OCI: lowercase only
        f"SHA256:{EMPTY_SHA256}",
        f"sha512:{EMPTY_SHA256}",
        f"sha256:{EMPTY_SHA256[:-1]}",
        f"sha256:{EMPTY_SHA256}0",
        f"sha256:{EMPTY_SHA256}\n",
        f" sha256:{EMPTY_SHA256}",
        f"sha256: {EMPTY_SHA256[1:]}",
        f"sha256:{EMPTY_SHA256[:-1]}g",
        f"sha256:0x{EMPTY_SHA256[2:]}",
        f"sha256:{EMPTY_SHA256[:-1]}\u0660",  # a non-ASCII digit
    ],
)
def test_parse_refuses_non_canonical_forms(text: str) -> None:
    with pytest.raises(InvalidInput, match="invalid artifact digest"):
        parse_digest(text)


def test_parse_refuses_non_strings() -> None:
    with pytest.raises(InvalidInput):
        parse_digest(f"sha256:{EMPTY_SHA256}".encode())  # type: ignore[arg-type]


@given(st.text(max_size=80))
def test_parse_accepts_exactly_the_canonical_form(text: str) -> None:
    if CANONICAL.fullmatch(text):
        assert str(parse_digest(text)) == text
    else:
        with pytest.raises(InvalidInput):
            parse_digest(text)


@given(st.binary(min_size=32, max_size=32), st.integers(min_value=0, max_value=70), st.text())
def test_parse_refuses_any_corruption_of_a_valid_digest(raw: bytes, at: int, junk: str) -> None:
    text = str(ArtifactDigest(raw))
    at = min(at, len(text))
    for mutated in (text[:at] + junk + text[at:], text[:at] + text[at + 1 :], text.upper()):
        if mutated == text:
            continue
        with pytest.raises(InvalidInput):
            parse_digest(mutated)


@pytest.mark.parametrize("raw", [b"", b"\x00" * 31, b"\x00" * 33])
def test_a_digest_is_exactly_32_bytes(raw: bytes) -> None:
    with pytest.raises(InvalidInput):
        ArtifactDigest(raw)
