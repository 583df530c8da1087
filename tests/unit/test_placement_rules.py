"""The host a VMPlacementPolicy gives each VM: the same answer from every shard, strict
rules that no host meets reported with the field that decided."""

from __future__ import annotations

import pytest

from virtrigaud.api.vmplacementpolicy import VMPlacementPolicySpec
from virtrigaud.controllers.vmplacementpolicy.rules import (
    Unsatisfiable,
    decide,
    host_rules,
    violations,
)

HOSTS = ["h0", "h1", "h2"]


def spread(max_per_host: int | None = None, scope: str | None = None, **more: object):
    anti: dict[str, object] = {"enabled": True}
    if max_per_host is not None:
        anti["maxVMsPerHost"] = max_per_host
    if scope is not None:
        anti["scope"] = scope
    return host_rules(
        VMPlacementPolicySpec.model_validate({"antiAffinity": {"hostAntiAffinity": anti}, **more})
    )


def test_waiting_vms_take_free_hosts_in_name_order_whoever_asks() -> None:
    rules = spread()
    waiting = ["c", "a", "b"]
    got = {me: decide(rules, HOSTS, {}, waiting, me).host for me in waiting}
    assert got == {"a": "h0", "b": "h1", "c": "h2"}
    # A VM placed meanwhile is counted: the others still get distinct hosts.
    assert decide(rules, HOSTS, {"a": "h0"}, ["b", "c"], "c").host == "h2"


def test_strict_spread_with_more_vms_than_places_names_the_field() -> None:
    rules = spread()
    placed = {"a": "h0", "b": "h1", "c": "h2"}
    with pytest.raises(Unsatisfiable) as e:
        decide(rules, HOSTS, placed, ["d"], "d")
    assert e.value.field == "spec.antiAffinity.hostAntiAffinity.maxVMsPerHost"
    assert "raise spec.antiAffinity.hostAntiAffinity.maxVMsPerHost" in e.value.message
    # Two per host: room again.
    assert decide(spread(2), HOSTS, placed, ["d"], "d").host == "h0"


def test_preferred_spread_places_anyway_and_says_what_was_not_kept() -> None:
    placed = {"a": "h0", "b": "h1", "c": "h2"}
    decision = decide(spread(scope="preferred"), HOSTS, placed, ["d"], "d")
    assert decision.host == "h0" and decision.violation


def test_hard_hosts_limit_the_choice() -> None:
    rules = spread(hard={"hosts": ["h1", "h2"]})
    assert decide(rules, HOSTS, {}, ["a"], "a").host == "h1"
    rules = spread(hard={"excludedHosts": HOSTS})
    with pytest.raises(Unsatisfiable) as e:
        decide(rules, HOSTS, {}, ["a"], "a")
    assert e.value.field == "spec.hard.excludedHosts"


def test_affinity_follows_the_first_vm() -> None:
    rules = host_rules(
        VMPlacementPolicySpec.model_validate(
            {"affinity": {"hostAffinity": {"enabled": True, "preferredHosts": ["h2"]}}}
        )
    )
    assert decide(rules, HOSTS, {}, ["a", "b"], "b").host == "h2"
    assert decide(rules, HOSTS, {"a": "h1"}, ["b"], "b").host == "h1"


def test_strict_affinity_and_anti_affinity_conflict() -> None:
    rules = spread(affinity={"hostAffinity": {"enabled": True}})
    with pytest.raises(Unsatisfiable):
        decide(rules, HOSTS, {}, ["a"], "a")


def test_violations_are_counted_from_where_vms_run() -> None:
    assert violations(spread(), {"a": "h0", "b": "h0"}) == [
        "h0 runs 2 VMs, spec.antiAffinity.hostAntiAffinity allows 1"
    ]
    assert violations(spread(), {"a": "h0", "b": "h1"}) == []
