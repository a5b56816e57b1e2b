"""The execution core: blocks, genesis, the py-evm executor, durable storage, mempool.

Modules, in dependency order:

- :mod:`~node.chain.types`    ``Address``/``Hash32``, predeploy addresses, role bits;
- :mod:`~node.chain.block`    ``Header`` / ``Block`` (RLP; hash excludes the seal),
  list-trie roots;
- :mod:`~node.chain.receipt`  ``Receipt`` / ``Log`` / ``BlockLog``, receipts root;
- :mod:`~node.chain.tx`       ``decode_transaction``: the stateless admission rules;
- :mod:`~node.chain.evm`      the py-evm (Prague) configuration and state database;
- :mod:`~node.chain.genesis`  ``genesis.json`` schema and block-0 state;
- :mod:`~node.chain.store`    ``ChainStore``: one SQLite database, atomic block commits;
- :mod:`~node.chain.executor` ``Executor``: build, validate, commit, call, estimate;
- :mod:`~node.chain.mempool`  ``Mempool``: admission and block order.

The package never interprets seals (commit certificates): verification is injected
into :class:`~node.chain.executor.Executor`.
"""
