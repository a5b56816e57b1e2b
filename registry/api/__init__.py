"""The registry's REST API (FastAPI), mounted under ``/v1`` on every miner.

:func:`mount` adds it to a miner's app (the daemon's route hook); :func:`create_registry_app`
builds a standalone app (tests, or a stateless replica in front of a remote node).
Both live in :mod:`registry.api.app`; they are imported lazily here so that
``registry.api.contract`` (the ABI codec the SDK and the miner policy share) can be
imported without FastAPI.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fastapi import FastAPI

__all__ = ["create_registry_app", "mount"]


def mount(app: FastAPI, view: Any, auth: Any, **kwargs: Any) -> None:
    """Mount the registry API under ``/v1`` on ``app``; see :func:`registry.api.app.mount`."""
    from registry.api.app import mount as _mount

    _mount(app, view, auth, **kwargs)


def create_registry_app(view: Any, auth: Any, **kwargs: Any) -> FastAPI:
    """A standalone app serving the registry API; see :mod:`registry.api.app`."""
    from registry.api.app import create_registry_app as _create

    return _create(view, auth, **kwargs)
