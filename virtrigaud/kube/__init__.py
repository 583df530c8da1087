"""Kubernetes API access: the async client, resource descriptors and Events."""
