"""A shard's Kubernetes credentials on whatever Ray node it runs: the kubeconfig it was
given, or the node's in-cluster ServiceAccount (token file + CA), never a silent
fallback; a rotated token is picked up. Against the dev stack's API server, with a
ServiceAccount directory built the way a pod has it."""

from __future__ import annotations

import base64
import shutil
import uuid
from pathlib import Path

import pytest

from virtrigaud.dev.info import KubeInfo
from virtrigaud.dev.kubeapi import ca_file
from virtrigaud.kube import client as kube_client
from virtrigaud.kube.client import SERVICE_ACCOUNT_DIR_ENV
from virtrigaud.kube.resources import NAMESPACES, SECRETS
from virtrigaud.shards.kube_access import (
    NoKubeCredentials,
    kubeconfig_for_shards,
    shard_kube_client,
)


@pytest.fixture
def in_cluster(kube_info: KubeInfo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    sa = tmp_path / "serviceaccount"
    sa.mkdir()
    (sa / "token").write_text("first-token\n")
    shutil.copy(ca_file(kube_info), sa / "ca.crt")
    host, _, port = kube_info.server.removeprefix("https://").rpartition(":")
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", host)
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", port)
    monkeypatch.setenv(SERVICE_ACCOUNT_DIR_ENV, str(sa))
    monkeypatch.delenv("KUBECONFIG", raising=False)
    return sa


async def test_without_a_kubeconfig_a_shard_uses_its_nodes_service_account(
    in_cluster: Path, kubeconfig: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The controller passes None when it runs in-cluster itself.
    assert kubeconfig_for_shards(None) is None
    async with shard_kube_client(None) as kube:
        assert kube.config.ca_file == str(in_cluster / "ca.crt")
        assert kube.config.verify  # the CA verifies the server: no skip-verify
        name = f"sa-{uuid.uuid4().hex[:6]}"
        await kube.create(
            SECRETS,
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": name, "namespace": "default"},
                "data": {"k": base64.b64encode(b"v").decode()},
            },
        )
        # A shard reads the Provider Secret it needs with these credentials.
        secret = await kube.get(SECRETS, name, "default")
        assert base64.b64decode(secret["data"]["k"]) == b"v"
        await kube.delete(SECRETS, name, "default")
        assert kube._http().headers["Authorization"] == "Bearer first-token"

        # The kubelet rotates the token file; the client follows it.
        (in_cluster / "token").write_text("second-token\n")
        monkeypatch.setattr(kube_client, "TOKEN_REREAD_SECONDS", 0.0)
        await kube.get(NAMESPACES, "default")
        assert kube._http().headers["Authorization"] == "Bearer second-token"


async def test_a_readable_kubeconfig_is_used_as_given(kubeconfig: str) -> None:
    assert kubeconfig_for_shards(kubeconfig) == kubeconfig  # absolute already
    async with shard_kube_client(kubeconfig) as kube:
        await kube.get(NAMESPACES, "default")


def test_missing_credentials_fail_with_the_node_and_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(NoKubeCredentials) as err:
        shard_kube_client(str(tmp_path / "absent-kubeconfig"))
    assert "not readable on the shard's node" in str(err.value)
    assert "mount it at the same path" in str(err.value)

    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv(SERVICE_ACCOUNT_DIR_ENV, str(tmp_path))
    with pytest.raises(NoKubeCredentials) as err:
        shard_kube_client(None)
    message = str(err.value)
    assert "KUBERNETES_SERVICE_HOST" in message and str(tmp_path / "token") in message
    assert "ServiceAccount" in message
