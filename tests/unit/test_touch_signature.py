"""Which changes of a dependency touch the shards: what its readers act on, not the
dependency controllers' own bookkeeping in status."""

from __future__ import annotations

import copy
from typing import Any

from virtrigaud.leader.routing import touch_signature

JSON = dict[str, Any]


def provider() -> JSON:
    return {
        "metadata": {"uid": "u1", "generation": 1, "resourceVersion": "10"},
        "spec": {"type": "vsphere", "endpoint": "https://vc/sdk"},
        "status": {"healthy": True, "connectedVMs": 3, "lastHealthCheck": "2026-01-01T00:00:00Z"},
    }


def test_provider_bookkeeping_does_not_touch_but_health_and_spec_do() -> None:
    base = provider()
    later = copy.deepcopy(base)
    later["metadata"]["resourceVersion"] = "11"
    later["status"].update(connectedVMs=4, lastHealthCheck="2026-01-01T00:00:30Z")
    assert touch_signature("Provider", later) == touch_signature("Provider", base)
    sick = copy.deepcopy(later)
    sick["status"]["healthy"] = False
    assert touch_signature("Provider", sick) != touch_signature("Provider", base)
    changed = copy.deepcopy(base)
    changed["spec"]["endpoint"] = "https://other/sdk"
    assert touch_signature("Provider", changed) != touch_signature("Provider", base)
    unknown = copy.deepcopy(base)
    unknown["status"] = {}
    assert touch_signature("Provider", unknown) == touch_signature("Provider", base), (
        "unknown -> healthy unblocks no VM: no touch"
    )
    deleting = copy.deepcopy(base)
    deleting["metadata"]["deletionTimestamp"] = "2026-01-01T00:01:00Z"
    assert touch_signature("Provider", deleting) != touch_signature("Provider", base)


def test_image_availability_touches_its_usage_does_not() -> None:
    image: JSON = {
        "metadata": {"uid": "i", "generation": 1},
        "spec": {"source": {"vsphere": {"templateName": "t"}}},
        "status": {"usedByVMs": 1, "providerStatus": {"ns/p": {"available": False}}},
    }
    more = copy.deepcopy(image)
    more["status"]["usedByVMs"] = 9
    assert touch_signature("VMImage", more) == touch_signature("VMImage", image)
    there = copy.deepcopy(image)
    there["status"]["providerStatus"]["ns/p"]["available"] = True
    assert touch_signature("VMImage", there) != touch_signature("VMImage", image)
    first_seen = copy.deepcopy(there)
    first_seen["status"]["providerStatus"] = {}
    assert touch_signature("VMImage", first_seen) == touch_signature("VMImage", there)


def test_a_secret_touches_on_every_version() -> None:
    secret: JSON = {"metadata": {"uid": "s", "resourceVersion": "1"}}
    rotated = {"metadata": {"uid": "s", "resourceVersion": "2"}}
    assert touch_signature("Secret", rotated) != touch_signature("Secret", secret)
