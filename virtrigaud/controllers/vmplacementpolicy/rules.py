"""A VMPlacementPolicy's host rules, and the host each VM that uses it gets.

Pure. The host rules are hostAntiAffinity (spread, at most ``maxVMsPerHost`` per host, 1
when unset), hostAffinity (all on one host, a preferred one first) and the hard / soft host
lists; a rule whose ``scope`` is unset is strict.

Every shard that places a VM of the policy computes the answer from the same facts: the
places taken (hosts the VMs record, and the policy's reservations: reserve.py, which makes
the decision and its reservation one atomic step across shards) and the sorted names of
the VMs still waiting, which take the free places in name order. The policy's own
reconcile reports VMs running against the rules (``violations``), e.g. moved by hand.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from virtrigaud.api.vmplacementpolicy import VMPlacementPolicySpec

SPREAD_FIELD = "spec.antiAffinity.hostAntiAffinity"
TOGETHER_FIELD = "spec.affinity.hostAffinity"
HARD_HOSTS_FIELD = "spec.hard.hosts"
HARD_EXCLUDED_FIELD = "spec.hard.excludedHosts"
SOFT_HOSTS_FIELD = "spec.soft.hosts"


@dataclass(frozen=True)
class HostRules:
    spread: bool = False
    max_per_host: int = 1
    spread_strict: bool = True
    together: bool = False
    together_strict: bool = True
    preferred: tuple[str, ...] = ()
    allowed: tuple[str, ...] = ()
    excluded: tuple[str, ...] = ()

    @property
    def any(self) -> bool:
        return self.spread or self.together or bool(self.allowed or self.excluded)


def host_rules(spec: VMPlacementPolicySpec) -> HostRules:
    anti = spec.anti_affinity.host_anti_affinity if spec.anti_affinity else None
    aff = spec.affinity.host_affinity if spec.affinity else None
    spread = anti is not None and anti.enabled
    together = aff is not None and aff.enabled
    return HostRules(
        spread=spread,
        max_per_host=(anti.max_vms_per_host if anti and anti.max_vms_per_host else 1),
        spread_strict=not (anti is not None and anti.scope == "preferred"),
        together=together,
        together_strict=not (aff is not None and aff.scope == "preferred"),
        preferred=tuple(aff.preferred_hosts if aff else ())
        + tuple(spec.soft.hosts if spec.soft else ()),
        allowed=tuple(spec.hard.hosts if spec.hard else ()),
        excluded=tuple(spec.hard.excluded_hosts if spec.hard else ()),
    )


@dataclass(frozen=True)
class Decision:
    host: str
    rule: str  # the field that decided, as users write it
    violation: str | None = None  # a preferred rule that could not be kept


class Unsatisfiable(Exception):
    """No host meets a strict rule: the VM waits. ``field`` is the rule's field."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(message)


def candidates(rules: HostRules, hosts: Sequence[str]) -> list[str]:
    allowed = [h for h in hosts if not rules.allowed or h in rules.allowed]
    found = [h for h in allowed if h not in rules.excluded]
    if not found:
        field = HARD_HOSTS_FIELD if not allowed else HARD_EXCLUDED_FIELD
        raise Unsatisfiable(
            field,
            f"{field} leaves none of the hosts {', '.join(hosts) or '(none)'} to place on: "
            f"name hosts of the VM's cluster in {HARD_HOSTS_FIELD} or exclude fewer",
        )
    return found


def decide(
    rules: HostRules,
    hosts: Sequence[str],
    placed: Mapping[str, str],
    waiting: Sequence[str],
    me: str,
) -> Decision:
    """The host for VM ``me`` (one of ``waiting``). ``placed``: VM name -> host of the
    policy's VMs that have one; ``hosts``: where the VM may go, in the provider's order."""
    if rules.spread and rules.together and rules.spread_strict and rules.together_strict:
        raise Unsatisfiable(
            SPREAD_FIELD,
            f"{SPREAD_FIELD} and {TOGETHER_FIELD} are both enabled and strict: VMs cannot be "
            "kept apart and together; disable one or set its scope to preferred",
        )
    pool = candidates(rules, hosts)
    counts = Counter(h for h in placed.values())
    if rules.together and (rules.together_strict or not rules.spread):
        return _together(rules, pool, counts)
    limit = rules.max_per_host if rules.spread else None
    strict = rules.spread and rules.spread_strict
    order = {h: i for i, h in enumerate(pool)}
    preferred = set(rules.preferred)
    for name in sorted(set(waiting) | {me}):
        host = min(pool, key=lambda h: (counts[h], h not in preferred, order[h]))
        full = limit is not None and counts[host] >= limit
        if full and strict:
            if name == me:
                raise Unsatisfiable(
                    f"{SPREAD_FIELD}.maxVMsPerHost",
                    f"{SPREAD_FIELD} allows {limit} VM(s) per host and each of the "
                    f"{len(pool)} host(s) {', '.join(pool)} has {limit} already: raise "
                    f"{SPREAD_FIELD}.maxVMsPerHost, add hosts to the cluster, set "
                    f"{SPREAD_FIELD}.scope to preferred, or use fewer VMs with this policy",
                )
            continue  # that VM waits; it takes no place
        counts[host] += 1
        if name == me:
            if not rules.spread:
                rule = HARD_HOSTS_FIELD if rules.allowed else HARD_EXCLUDED_FIELD
                return Decision(host, rule)
            violation = (
                f"{SPREAD_FIELD} (preferred) allows {limit} per host; {host} now has {counts[host]}"
                if full
                else None
            )
            return Decision(host, SPREAD_FIELD, violation)
    raise AssertionError("me is among the waiting VMs")  # pragma: no cover


def _together(rules: HostRules, pool: list[str], counts: Counter[str]) -> Decision:
    busiest = [h for h, _ in counts.most_common() if h in pool]
    if busiest:
        return Decision(busiest[0], TOGETHER_FIELD)
    if counts and rules.together_strict:
        raise Unsatisfiable(
            TOGETHER_FIELD,
            f"{TOGETHER_FIELD} keeps the policy's VMs on one host, and they run on "
            f"{', '.join(sorted(counts))}, which {HARD_HOSTS_FIELD}/{HARD_EXCLUDED_FIELD} "
            "rule out: allow that host, or move the VMs",
        )
    host = next((h for h in rules.preferred if h in pool), pool[0])
    return Decision(host, TOGETHER_FIELD)


def violations(rules: HostRules, placed: Mapping[str, str]) -> list[str]:
    """Where the policy's VMs run against its host rules (what the policy reports)."""
    found: list[str] = []
    counts = Counter(placed.values())
    if rules.spread:
        for host, n in sorted(counts.items()):
            if n > rules.max_per_host:
                found.append(f"{host} runs {n} VMs, {SPREAD_FIELD} allows {rules.max_per_host}")
    if rules.together and len(counts) > 1:
        found.append(f"VMs run on {len(counts)} hosts, {TOGETHER_FIELD} wants one")
    for vm, host in sorted(placed.items()):
        if (rules.allowed and host not in rules.allowed) or host in rules.excluded:
            found.append(f"{vm} runs on {host}, outside {HARD_HOSTS_FIELD}/excludedHosts")
    return found
