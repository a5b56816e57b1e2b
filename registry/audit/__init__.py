"""Audit and forensics: verifiable history, evidence bundles, equivocation, lineage pictures.

Everything here works from chain data alone — a miner's data directory opened read-only
(:mod:`registry.audit.source`) — so an analyst never has to trust a running miner:

- :mod:`registry.audit.index` / :mod:`registry.audit.queries`: a rebuildable SQLite index
  of registry, membership and election activity; history, lineage, actor, round and
  validator queries;
- :mod:`registry.audit.verify`: hash links, roots, commit certificates against the
  validator set of each epoch (followed from genesis), optional re-execution;
- :mod:`registry.audit.bundle`: self-contained evidence bundles checked offline;
- :mod:`registry.audit.equivocation`: evidence records gathered by miners;
- :mod:`registry.audit.graph`: DOT / SVG / Mermaid pictures of lineage and rounds;
- :mod:`registry.audit.export`: a directory with a manifest of digests (chain of custody).
"""
