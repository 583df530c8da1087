"""The leader's reverse references: which VMs use each Provider, class, image, network and
placement policy, and which Providers need an image."""

from __future__ import annotations

from virtrigaud.leader.usage import UsageIndex, references


def vm(ns: str, name: str, **spec: object) -> tuple[str, dict[str, object]]:
    return f"VirtualMachine/{ns}/{name}", {
        "metadata": {"name": name, "namespace": ns},
        "spec": spec,
    }


def test_references_name_every_dependency_with_the_vms_provider() -> None:
    key, obj = vm(
        "a",
        "web",
        providerRef={"name": "pve", "namespace": "infra"},
        classRef={"name": "small"},
        imageRef={"name": "deb"},
        networks=[{"name": "eth0", "networkRef": {"name": "lan"}}, {"name": "eth1"}],
        placementRef={"name": "spread"},
    )
    assert references(key, obj) == {
        "Provider/infra/pve": "Provider/infra/pve",
        "VMClass/a/small": "Provider/infra/pve",
        "VMImage/a/deb": "Provider/infra/pve",
        "VMNetworkAttachment/a/lan": "Provider/infra/pve",
        "VMPlacementPolicy/a/spread": "Provider/infra/pve",
    }


def test_usage_follows_creates_changes_and_deletes() -> None:
    index = UsageIndex()
    k1, o1 = vm(
        "a", "one", providerRef={"name": "p1"}, classRef={"name": "c"}, imageRef={"name": "i"}
    )
    k2, o2 = vm(
        "a", "two", providerRef={"name": "p2"}, classRef={"name": "c"}, imageRef={"name": "i"}
    )
    assert index.update(k1, o1) == {"Provider/a/p1", "VMClass/a/c", "VMImage/a/i"}
    assert index.update(k2, o2) == {"Provider/a/p2", "VMClass/a/c", "VMImage/a/i"}
    assert index.usage("VMImage/a/i") == {
        "vms": 2,
        "providers": ["Provider/a/p1", "Provider/a/p2"],
        "names": ["a/one", "a/two"],
    }
    assert index.update(k1, o1) == set(), "an unchanged VM changes no usage"
    _, o1b = vm(
        "a", "one", providerRef={"name": "p1"}, classRef={"name": "big"}, imageRef={"name": "i"}
    )
    assert index.update(k1, o1b) == {"VMClass/a/c", "VMClass/a/big"}
    assert index.usage("VMClass/a/c")["vms"] == 1
    assert index.update(k2, None) == {"Provider/a/p2", "VMClass/a/c", "VMImage/a/i"}
    assert index.usage("VMImage/a/i") == {
        "vms": 1,
        "providers": ["Provider/a/p1"],
        "names": ["a/one"],
    }
    assert index.usage("Provider/a/p2") == {"vms": 0, "providers": [], "names": []}
