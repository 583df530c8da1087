"""Shard actors: workqueue, reconcile workers and the reconcilers they run."""
