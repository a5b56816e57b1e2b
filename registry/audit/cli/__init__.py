"""``twinchain audit …``: the forensics CLI.

Each command family lives in its own module and registers itself on :data:`audit_app`:
``query`` (history, lineage, actor, round, validators, index), ``verify`` (verify, proof,
check, export) and ``evidence`` (equivocations, jail).
"""

from __future__ import annotations

import importlib

import typer

audit_app = typer.Typer(
    help="Forensics: query history, verify the chain, export and check evidence.",
    no_args_is_help=True,
)

_MODULES = ("query", "verify", "evidence")


def register_audit_commands(app: typer.Typer) -> None:
    """Mount ``audit`` on the main CLI, loading every command module that exists."""
    for name in _MODULES:
        try:
            importlib.import_module(f"registry.audit.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"registry.audit.cli.{name}":
                raise
    app.add_typer(audit_app, name="audit")
