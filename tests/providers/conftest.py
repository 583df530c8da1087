"""Fixtures of the provider contract suite: one suite, parametrised over every provider type.

See ``factories/__init__.py`` for what each type's factory module supplies.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType

import pytest

_HERE = Path(__file__).resolve().parent
if str(_HERE) not in sys.path:
    sys.path.insert(0, str(_HERE))

from factories import PROVIDER_TYPES, LocalBucket, VMTracker, load_factory  # noqa: E402
from remote_harness import RemoteFactory, WirePKI, make_pki  # noqa: E402

from virtrigaud.providers.base import Provider  # noqa: E402


@pytest.fixture(scope="session")
def provider_limiter() -> LocalBucket:
    return LocalBucket()


@pytest.fixture(params=PROVIDER_TYPES)
def provider_type(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def transport() -> str:
    """How the suite reaches the provider; test_contract.py runs both ways."""
    return "in-process"


@pytest.fixture(scope="session")
def wire_pki(tmp_path_factory: pytest.TempPathFactory) -> WirePKI:
    return make_pki(tmp_path_factory.mktemp("wire-pki"))


@pytest.fixture
def factory(provider_type: str, transport: str, request: pytest.FixtureRequest) -> ModuleType:
    module = load_factory(provider_type)
    if transport == "grpc-mtls":
        return RemoteFactory(module, request)  # type: ignore[return-value]
    return module


@pytest.fixture
async def provider(factory: ModuleType, request: pytest.FixtureRequest) -> AsyncIterator[Provider]:
    made: Provider = await factory.make_provider(request)
    try:
        yield made
    finally:
        await made.close()


@pytest.fixture
async def vms(provider: Provider, factory: ModuleType) -> AsyncIterator[VMTracker]:
    tracker = VMTracker(provider, factory)
    yield tracker
    await tracker.cleanup()
