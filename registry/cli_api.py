"""`twinchain api serve`: the registry REST API as its own process, in front of a miner.

The miner stays the authority for everything: tokens (the API forwards them), reads (its
JSON-RPC, with the client's token), writes (client-signed transactions relayed to it) and
artifacts (streamed through, verified against their digest, cached by digest). See
:mod:`registry.api.remote`.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

__all__ = ["api_app"]

api_app = typer.Typer(
    help="Run the registry REST API alone, in front of a remote miner.", no_args_is_help=True
)
console = Console(stderr=True)

#: Largest blob the cache takes (a miner's default limit).
DEFAULT_MAX_BLOB_BYTES = 4 * 1024**3


def _split_listen(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise typer.BadParameter(f"expected HOST:PORT, got {listen!r}", param_hint="--listen")
    return host.strip("[]"), int(port)


@api_app.command("serve")
def serve(
    miner: Annotated[
        str,
        typer.Option(
            "--miner", help="Base URL of the miner's RPC port, e.g. http://10.0.0.5:8545."
        ),
    ],
    listen: Annotated[str, typer.Option(help="HOST:PORT to serve the API on.")] = "127.0.0.1:8600",
    cache_dir: Annotated[
        Path | None,
        typer.Option(
            "--cache-dir",
            help="Keep downloaded artifacts here, by digest (default: a temporary "
            "directory removed on exit).",
        ),
    ] = None,
    ca_cert: Annotated[
        Path | None,
        typer.Option("--ca-cert", help="CA bundle that signs an https:// miner's certificate."),
    ] = None,
    tls_cert: Annotated[
        Path | None, typer.Option("--tls-cert", help="Serve HTTPS with this certificate (PEM).")
    ] = None,
    tls_key: Annotated[
        Path | None, typer.Option("--tls-key", help="Private key of --tls-cert (PEM).")
    ] = None,
    max_blob_bytes: Annotated[
        int, typer.Option(min=0, help="Largest artifact the cache keeps.")
    ] = DEFAULT_MAX_BLOB_BYTES,
    timeout: Annotated[
        float, typer.Option(min=1.0, help="Seconds to wait for the miner's answers.")
    ] = 60.0,
) -> None:
    """Serve /v1 (OpenAPI at /v1/docs, /docs redirects) and JSON-RPC on / for one miner.

    Exit codes: 2 bad options, 1 the server could not start.
    """
    import uvicorn

    from node.blobs import BlobStore
    from node.errors import TwinChainError
    from registry.api.remote import create_standalone_app

    if not miner.startswith(("http://", "https://")):
        raise typer.BadParameter(f"expected an http(s):// URL, got {miner!r}", param_hint="--miner")
    host, port = _split_listen(listen)
    if (tls_cert is None) != (tls_key is None):
        raise typer.BadParameter("give both --tls-cert and --tls-key, or neither")
    for path in (ca_cert, tls_cert, tls_key):
        if path is not None and not path.is_file():
            raise typer.BadParameter(f"{path} is not a readable file")
    if cache_dir is None:
        cache_dir = Path(tempfile.mkdtemp(prefix="twinchain-api-cache-"))
        atexit.register(shutil.rmtree, cache_dir, True)
    try:
        cache = BlobStore(cache_dir, max_blob_bytes=max_blob_bytes)
    except TwinChainError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from exc
    app = create_standalone_app(
        miner, cache, verify=str(ca_cert) if ca_cert is not None else True, timeout=timeout
    )
    scheme = "https" if tls_cert is not None else "http"
    console.print(
        f"registry API on {scheme}://{listen}/v1 (docs: /docs) in front of the miner at "
        f"{miner}; artifact cache {cache_dir}"
    )
    try:
        uvicorn.run(
            app,
            host=host,
            port=port,
            log_level="warning",
            ssl_certfile=str(tls_cert) if tls_cert is not None else None,
            ssl_keyfile=str(tls_key) if tls_key is not None else None,
        )
    except OSError as exc:
        console.print(f"[red]error:[/red] cannot serve on {listen}: {exc}")
        raise typer.Exit(1) from exc
    except SystemExit as exc:  # uvicorn reports why (address in use...) and exits
        console.print(f"[red]error:[/red] cannot serve on {listen} (see above)")
        raise typer.Exit(1) from exc
