"""The TwinChain error hierarchy.

Every error raised on purpose by TwinChain derives from :class:`TwinChainError`.
Subclasses say *what* failed and *whose fault* it is, so that the API layer can map
them to a status in one place:

- :class:`InvalidInput` — the caller sent something malformed or not allowed
  (HTTP 400/JSON-RPC -32602); nothing was changed.
- :class:`Unauthorized` / :class:`Forbidden` — missing/bad credentials or wrong role.
- :class:`NotFound` — the thing asked for does not exist.
- :class:`Conflict` — the request contradicts stored state (duplicate, closed round...).
- :class:`InvalidBlock` / :class:`InvalidTransaction` — a peer or client sent chain data
  that violates the protocol (the peer's fault).
- :class:`StorageError` — our own durable store is inconsistent (our fault).
"""

from __future__ import annotations


class TwinChainError(Exception):
    """Base class of every deliberate TwinChain error."""

    #: True when the error is the caller's/peer's fault, False when it is ours.
    caller_fault: bool = True


class InvalidInput(TwinChainError):
    """Malformed, oversized or otherwise unacceptable input; nothing was changed."""


class Unauthorized(TwinChainError):
    """Missing, expired, forged or replayed credentials."""


class Forbidden(TwinChainError):
    """Authenticated, but the account lacks the role for this action."""


class NotFound(TwinChainError):
    """The requested object does not exist."""


class Conflict(TwinChainError):
    """The request contradicts stored state (duplicate, wrong phase, ...)."""


class InvalidTransaction(InvalidInput):
    """A transaction is malformed or not admissible (signature, chain id, nonce, role...)."""


class InvalidBlock(TwinChainError):
    """A block violates the protocol (bad root, bad link, bad certificate...)."""


class StorageError(TwinChainError):
    """The node's own durable store is inconsistent or unusable."""

    caller_fault = False
