"""The miner's Ethereum JSON-RPC server.

- :mod:`node.rpc.backend` — :class:`~node.rpc.backend.NodeView`, what the server needs
  from a running miner;
- :mod:`node.rpc.server` — :func:`~node.rpc.server.create_rpc_app`, the FastAPI app
  (HTTP ``POST /`` and ``/rpc``, WebSocket ``/ws``);
- :mod:`node.rpc.methods` — one handler per method; :mod:`node.rpc.params` parses
  parameters, :mod:`node.rpc.results` encodes results, :mod:`node.rpc.errors` maps errors
  to codes, :mod:`node.rpc.wire` reads and writes JSON with a nesting bound;
- :mod:`node.rpc.local` — :class:`~node.rpc.local.LocalNodeView`, a real single-node
  chain (tests, development tools).

Member sign-in and bearer tokens live in :mod:`node.auth` (the REST API reuses them).
"""
