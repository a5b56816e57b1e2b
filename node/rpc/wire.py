"""JSON text in and out of the RPC server, with a bound on nesting depth.

Why the bound: ``json.loads`` recurses in C once per nesting level and relies on the
interpreter's recursion limit to stop; py-evm and py_ecc raise that limit to 100,000 on
import, so a body of 100,000 ``[`` overflows the C stack and kills the whole miner with
a segmentation fault. :func:`load` therefore measures the nesting of the document's
bracket skeleton (string contents removed) before parsing, with regular expressions
that run in C, and refuses anything deeper than :data:`MAX_DEPTH` as a parse error.
A JSON-RPC request needs about six levels (batch, request, params, filter, topics,
OR-list).

Bodies must be UTF-8 (RFC 8259 §8.1): ``json.loads`` would otherwise guess UTF-16/32
from the first bytes, and the skeleton scan could not be trusted on such input.
"""

from __future__ import annotations

import json
import re
from typing import Any, Final

__all__ = ["MAX_DEPTH", "JsonTooDeep", "dump", "load"]

MAX_DEPTH: Final = 32

_STRING: Final = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKET: Final = re.compile(r"[^\[\]{}]+")
_INNERMOST_PAIR: Final = re.compile(r"\[\]|\{\}")


class JsonTooDeep(ValueError):
    """The document nests deeper than :data:`MAX_DEPTH`."""


def load(body: bytes | str) -> Any:
    """Parse a JSON document; ValueError (JsonTooDeep, UnicodeDecodeError,
    JSONDecodeError) when it is not acceptable."""
    text = body.decode("utf-8") if isinstance(body, bytes) else body
    _check_depth(text)
    return json.loads(text)


def _check_depth(text: str) -> None:
    """Refuse documents whose brackets could nest deeper than about ``MAX_DEPTH``.

    Each pass removes the innermost ``[]``/``{}`` pairs of the skeleton, so a
    well-formed document of depth d is empty after d passes. Whatever remains after
    ``MAX_DEPTH`` passes is either deeper nesting or unbalanced brackets (which the
    parser could still descend into); more than ``MAX_DEPTH`` such characters is refused.
    """
    skeleton = _NOT_BRACKET.sub("", _STRING.sub("", text))
    for _ in range(MAX_DEPTH):
        if not skeleton:
            return
        reduced = _INNERMOST_PAIR.sub("", skeleton)
        if reduced == skeleton:
            break
        skeleton = reduced
    if len(skeleton) > MAX_DEPTH:
        raise JsonTooDeep(f"JSON nests deeper than {MAX_DEPTH} levels")


def dump(payload: object) -> bytes:
    """Compact UTF-8 JSON (NaN and infinities refused: they are not JSON)."""
    return json.dumps(payload, separators=(",", ":"), allow_nan=False).encode()
