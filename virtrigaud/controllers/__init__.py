"""The reconcilers, one package per kind, and the dispatcher a shard runs them through."""
