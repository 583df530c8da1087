"""A Provider whose credentials Secret was written the usual way (``stringData``) works: the
dev API server folds it into ``data`` as kube-apiserver does, and the VM converges."""

from __future__ import annotations

import pytest
from fixtures_vm import PROVIDER_TYPES, VMEnv, is_ready, provider_spec

from virtrigaud.kube.resources import PROVIDERS, SECRETS

pytest_plugins = ["fixtures_vm"]


@pytest.mark.parametrize("provider_type", PROVIDER_TYPES)
async def test_provider_secret_written_with_string_data(vm_env: VMEnv, provider_type: str) -> None:
    spec, credentials = provider_spec(provider_type, vm_env.stack)
    ns = vm_env.namespace
    stored = await vm_env.kube.create(
        SECRETS,
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "plain-credentials", "namespace": ns},
            "stringData": credentials,
        },
    )
    assert "stringData" not in stored and set(stored["data"]) == set(credentials)
    await vm_env.apply(
        PROVIDERS,
        {
            "apiVersion": "infra.virtrigaud.io/v1beta1",
            "kind": "Provider",
            "metadata": {"name": "plain", "namespace": ns},
            "spec": {**spec, "credentialSecretRef": {"name": "plain-credentials"}},
        },
    )
    name = f"plain-{provider_type}"
    await vm_env.vm(name, provider_type, power_state="Off", provider_ref={"name": "plain"})
    driven = await vm_env.drive(name, is_ready, timeout=30)
    assert driven.obj is not None and driven.obj["status"]["id"]
