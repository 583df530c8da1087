"""A dependency the controller's RBAC does not let it read: the VM waits with a reason that
names the object, the field and the fix, instead of failing with a bare 403."""

from __future__ import annotations

from typing import Any

import pytest

from virtrigaud.controllers.common.resolve import NotGranted, ReadForbidden, Resolver
from virtrigaud.kube.client import ApiError
from virtrigaud.kube.resources import SECRETS, VM_CLASSES


class ForbiddingKube:
    def __init__(self, status: int) -> None:
        self.status = status

    async def get(self, res: Any, name: str, namespace: str | None = None) -> Any:
        raise ApiError(self.status, "Forbidden", f"cannot get {res.plural} {name}")


async def test_a_forbidden_secret_names_the_chart_value_that_grants_it() -> None:
    resolver = Resolver(ForbiddingKube(403))  # type: ignore[arg-type]
    with pytest.raises(ReadForbidden) as err:
        await resolver.require(SECRETS, "tenant-a", "creds", "spec.credentialSecretRef")
    assert isinstance(err.value, NotGranted) and err.value.reason == "ReadForbidden"
    assert str(err.value) == (
        "the controller may not read Secret tenant-a/creds (referenced by "
        "spec.credentialSecretRef): add the namespace to the chart's rbac.secretNamespaces "
        "(or set rbac.secretsInAllNamespaces)"
    )
    with pytest.raises(ReadForbidden, match="grant the controller's ServiceAccount get"):
        await resolver.require(VM_CLASSES, "tenant-a", "small", "spec.classRef")


async def test_other_api_errors_are_not_turned_into_a_denial() -> None:
    resolver = Resolver(ForbiddingKube(500))  # type: ignore[arg-type]
    with pytest.raises(ApiError):
        await resolver.require(SECRETS, "tenant-a", "creds", "spec.credentialSecretRef")
