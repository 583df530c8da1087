"""Which Provider objects run remotely, and the errors for half-configured ones."""

from __future__ import annotations

from typing import Any

import pytest

from virtrigaud.controllers.common.resolve import provider_config
from virtrigaud.leader.routing import secrets_of_provider
from virtrigaud.providers.base import TerminalError
from virtrigaud.providers.registry import ProviderConfig, RemoteRuntime
from virtrigaud.providers.remote.runtime import ENDPOINT_ANNOTATION, runtime_of


def provider(runtime: dict[str, Any] | None, endpoint: str | None = None) -> Any:
    obj: dict[str, Any] = {
        "metadata": {"namespace": "ns", "name": "prov"},
        "spec": {"type": "vsphere", "endpoint": "https://vc/sdk"},
    }
    if runtime is not None:
        obj["spec"]["runtime"] = runtime
    if endpoint:
        obj["metadata"]["annotations"] = {ENDPOINT_ANNOTATION: endpoint}
    return obj


def test_in_process_providers_have_no_runtime() -> None:
    assert runtime_of(provider(None)) is None
    assert runtime_of(provider({"image": "x"})) is None


def test_remote_with_tls_secret() -> None:
    ref = runtime_of(
        provider(
            {
                "mode": "Remote",
                "service": {
                    "port": 9443,
                    "tls": {"enabled": True, "secretRef": {"name": "prov-tls"}},
                },
            }
        )
    )
    assert ref is not None
    # The Service the Go project names for the Provider, on spec.runtime.service.port.
    assert (ref.address, ref.tls_secret, ref.insecure) == (
        "virtrigaud-provider-ns-prov.ns.svc:9443",
        "prov-tls",
        False,
    )


def test_missing_tls_block_is_a_loud_error() -> None:
    with pytest.raises(TerminalError) as err:
        runtime_of(provider({"mode": "Remote", "service": {"port": 9443}}))
    assert err.value.field == "spec.runtime.service.tls"


def test_plaintext_only_when_disabled_explicitly() -> None:
    ref = runtime_of(provider({"mode": "Remote", "service": {"tls": {"enabled": False}}}))
    assert ref is not None and ref.insecure and ref.tls_secret is None
    with pytest.raises(TerminalError):
        runtime_of(provider({"mode": "Remote", "service": {"tls": {"enabled": True}}}))


def test_the_annotation_names_a_server_outside_the_cluster() -> None:
    runtime = {"mode": "Remote", "service": {"port": 9500, "tls": {"secretRef": {"name": "t"}}}}
    ref = runtime_of(provider(runtime))
    assert ref is not None and ref.address == "virtrigaud-provider-ns-prov.ns.svc:9500"
    ref = runtime_of(provider(runtime, endpoint="127.0.0.1:7001"))
    assert ref is not None and ref.address == "127.0.0.1:7001"


@pytest.mark.parametrize("bad", ["127.0.0.1", "https://h:1", "h:99999", "h: 1"])
def test_an_annotation_that_is_no_address_names_itself(bad: str) -> None:
    runtime = {"mode": "Remote", "service": {"tls": {"secretRef": {"name": "t"}}}}
    with pytest.raises(TerminalError) as err:
        runtime_of(provider(runtime, endpoint=bad))
    assert err.value.field == f"metadata.annotations[{ENDPOINT_ANNOTATION}]"
    assert "host:port" in str(err.value)


def test_skipping_server_verification_is_refused() -> None:
    tls = {"secretRef": {"name": "t"}, "insecureSkipVerify": True}
    with pytest.raises(TerminalError) as err:
        runtime_of(provider({"mode": "Remote", "service": {"tls": tls}}))
    assert err.value.field == "spec.runtime.service.tls.insecureSkipVerify"


def test_tls_material_is_part_of_the_fingerprint() -> None:
    base = provider_config(provider(None), {})
    a = ProviderConfig(**{**base.__dict__, "remote": RemoteRuntime("h:1", tls={"ca.crt": "A"})})
    b = ProviderConfig(**{**base.__dict__, "remote": RemoteRuntime("h:1", tls={"ca.crt": "B"})})
    assert a.fingerprint() != b.fingerprint()  # a rotated Secret makes the pool rebuild


def test_the_tls_secret_is_a_secret_the_provider_names() -> None:
    runtime = {"mode": "Remote", "service": {"tls": {"secretRef": {"name": "prov-tls"}}}}
    obj = provider(runtime)
    obj["spec"]["credentialSecretRef"] = {"name": "creds"}
    # The leader watches both, so a rotated client certificate reaches the shards at once.
    assert secrets_of_provider(obj) == [("ns", "creds"), ("ns", "prov-tls")]
    assert secrets_of_provider(provider(None)) == []
