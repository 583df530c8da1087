"""Which Provider objects run remotely, and the errors for half-configured ones."""

from __future__ import annotations

from typing import Any

import pytest

from virtrigaud.controllers.common.resolve import provider_config
from virtrigaud.providers.base import RetryableError, TerminalError
from virtrigaud.providers.registry import ProviderConfig, RemoteRuntime
from virtrigaud.providers.remote.runtime import runtime_of


def provider(runtime: dict[str, Any] | None, endpoint: str | None = "prov.ns.svc:9443") -> Any:
    obj: dict[str, Any] = {
        "metadata": {"namespace": "ns", "name": "prov"},
        "spec": {"type": "vsphere", "endpoint": "https://vc/sdk"},
    }
    if runtime is not None:
        obj["spec"]["runtime"] = runtime
    if endpoint:
        obj["status"] = {"runtime": {"endpoint": endpoint}}
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
    assert (ref.address, ref.tls_secret, ref.insecure) == ("prov.ns.svc:9443", "prov-tls", False)


def test_missing_tls_block_is_a_loud_error() -> None:
    with pytest.raises(TerminalError) as err:
        runtime_of(provider({"mode": "Remote", "service": {"port": 9443}}))
    assert err.value.field == "spec.runtime.service.tls"


def test_plaintext_only_when_disabled_explicitly() -> None:
    ref = runtime_of(provider({"mode": "Remote", "service": {"tls": {"enabled": False}}}))
    assert ref is not None and ref.insecure and ref.tls_secret is None
    with pytest.raises(TerminalError):
        runtime_of(provider({"mode": "Remote", "service": {"tls": {"enabled": True}}}))


def test_no_endpoint_yet_is_retryable() -> None:
    runtime = {"mode": "Remote", "service": {"tls": {"secretRef": {"name": "t"}}}}
    with pytest.raises(RetryableError, match=r"status\.runtime\.endpoint"):
        runtime_of(provider(runtime, endpoint=None))


def test_tls_material_is_part_of_the_fingerprint() -> None:
    base = provider_config(provider(None), {})
    a = ProviderConfig(**{**base.__dict__, "remote": RemoteRuntime("h:1", tls={"ca.crt": "A"})})
    b = ProviderConfig(**{**base.__dict__, "remote": RemoteRuntime("h:1", tls={"ca.crt": "B"})})
    assert a.fingerprint() != b.fingerprint()  # a rotated Secret makes the pool rebuild
