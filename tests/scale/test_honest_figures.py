"""The scale suite's figures can come out bad: each check is fed data where the thing it
measures went wrong, and must say so. Efficiency against the raw mix, lost VMs (shard
ownership, the simulators' own listings), requests counted at the simulators, exact
per-item queue waits (lanes, moved keys, a window across a shard resize), churn changes
that need a power cycle, and the idle projection of the resync schedule."""

from __future__ import annotations

import asyncio
import http.client
import ssl
import struct
import sys
import time
from pathlib import Path

import pytest

SCALE_TESTS = Path(__file__).resolve().parents[2] / "scale-tests"
if str(SCALE_TESTS) not in sys.path:
    sys.path.insert(0, str(SCALE_TESTS))

from vrscale import inventory, rawmix, waits  # noqa: E402
from vrscale.report import Report  # noqa: E402
from vrscale.scenarios.common import ownership_checks, simulator_checks  # noqa: E402
from vrscale.scenarios.idle import projected_worst_hour  # noqa: E402
from vrscale.scenarios.load import (  # noqa: E402
    APPLIED,
    NOT_APPLIED,
    POWER_CYCLE,
    SUPERSEDED,
    Change,
    change_figures,
    outcome,
)
from vrscale.scenarios.ratelimit import wire_figures  # noqa: E402
from vrscale.shard_probe import ShardView, ownership  # noqa: E402
from vrscale.watcher import Seen, VMState  # noqa: E402
from vrscale.wire import (  # noqa: E402
    KEEPALIVE_PROGRAM,
    REMOTE_PROGRAM,
    HttpCountingProxy,
    HttpRequestFramer,
    LibvirtCallFramer,
    LibvirtCountingProxy,
)

from virtrigaud.dev.info import (  # noqa: E402
    LibvirtInfo,
    ProxmoxInfo,
    StackInfo,
    VcsimInfo,
)
from virtrigaud.shards.runtime import resync_delay  # noqa: E402


def report() -> Report:
    return Report(
        scenario="t",
        started_at=0.0,
        machine={
            "logical_cores": 2,
            "physical_cores": 2,
            "memory_gib": 1.0,
            "python": "3.11",
            "platform": "linux",
            "load_average_at_start": (0.0, 0.0, 0.0),
        },
    )


def verdict(r: Report, name: str) -> bool | None:
    return next(t.passed for t in r.targets if t.name == name)


# -- efficiency: like with like ----------------------------------------------------------------


CONVERGE = {
    "vms": 300,
    "throughput_vms_per_s": 7.2,
    "per_simulator": {
        "vcsim": {"vms_per_s": 2.4},
        "libvirt": {"vms_per_s": 2.4},
        "proxmox": {"vms_per_s": 2.4},
    },
}
MIX = {
    "vms": 300,
    "vms_per_s": 20.0,
    "best_concurrency_per_simulator": 4,
    "per_simulator_vms_per_s": {"vcsim": 12.0, "libvirt": 60.0, "proxmox": 6.7},
}


def test_efficiency_divides_by_the_raw_mix_overall_and_per_simulator() -> None:
    got = rawmix.efficiency(CONVERGE, MIX)
    assert got["overall"] == 0.36
    assert got["per_simulator"]["libvirt"]["efficiency"] == 0.04
    assert got["per_simulator"]["proxmox"]["efficiency"] == 0.358
    r = report()
    r.check("efficiency_vs_raw_mix", "d", got["overall"], ">=", 0.8, "ratio")
    assert verdict(r, "efficiency_vs_raw_mix") is False
    good = rawmix.efficiency({**CONVERGE, "throughput_vms_per_s": 17.0}, MIX)
    r.check("efficiency_vs_raw_mix", "d", good["overall"], ">=", 0.8, "ratio")
    assert verdict(r, "efficiency_vs_raw_mix") is True


def test_efficiency_refuses_a_raw_mix_of_another_fleet_size() -> None:
    with pytest.raises(ValueError, match="like with like"):
        rawmix.efficiency(CONVERGE, {**MIX, "vms": 3000})


def test_the_raw_mix_deals_vms_like_the_converge_and_rates_only_complete_levels() -> None:
    assert rawmix.split(10, ["vcsim", "libvirt", "proxmox"]) == {
        "vcsim": 4,
        "libvirt": 3,
        "proxmox": 3,
    }
    done = rawmix.SimRun(vms=3, done_at=[1.0, 2.0, 3.0])
    short = rawmix.SimRun(vms=3, done_at=[1.0, 2.0], failures=["x"])
    assert done.figures()["vms_per_s"] == 1.0
    assert short.figures()["vms_per_s"] is None, "a simulator that lost VMs has no rate"
    levels = [{"concurrency_per_simulator": 4, "vms_per_s": 9.0}, {"vms_per_s": None}]
    assert rawmix.best(levels) == levels[0]


# -- lost VMs ----------------------------------------------------------------------------------


def view(shard: str, owned: list[str], lease: float = 5.0, ok: bool = True) -> ShardView:
    return ShardView(actor=f"a-{shard}", ok=ok, shard=shard, lease_remaining=lease, owned=owned)


def test_ownership_finds_unowned_doubly_owned_fenced_and_stray_keys() -> None:
    keys = ["ns/a", "ns/b", "ns/c", "ns/d"]
    clean = [view("shard-0", ["ns/a", "VirtualMachine/ns/b"]), view("shard-1", ["ns/c", "ns/d"])]
    assert ownership(clean, keys).problems == 0
    broken = [
        view("shard-0", ["ns/a", "ns/b", "ns/gone", "VMSnapshot/ns/s"]),
        view("shard-1", ["ns/b"]),  # b twice; c nowhere
        view("shard-2", ["ns/d"], lease=0.0),  # d only on a fenced shard
        view("shard-3", [], ok=False),
    ]
    got = ownership(broken, keys)
    assert got.multiply_owned == {"ns/b": ["shard-0", "shard-1"]}
    assert got.unowned == ["ns/c", "ns/d"]
    assert got.held_by_fenced == {"ns/d": ["shard-2"]}
    assert got.unexpected == ["ns/gone"]
    assert got.fenced_shards == ["shard-2"] and got.silent_actors == ["a-shard-3"]
    r = report()
    ownership_checks(r, got)
    assert verdict(r, "one_owner_per_key") is False
    assert r.figures["ownership"]["unowned"] == 2


def test_vms_are_counted_on_the_simulator_missing_twice_or_off() -> None:
    name = inventory.hypervisor_name
    listed = {
        "vcsim": [
            inventory.Listed(name("ns/a"), True),
            inventory.Listed(name("ns/b"), True),
            inventory.Listed(name("ns/b"), False),
            inventory.Listed("vrscale-template", False),
        ],
        "libvirt": [inventory.Listed(name("ns/c"), False)],
    }
    counts = inventory.count_on_simulators(
        {"vcsim": ["ns/a", "ns/b", "ns/x"], "libvirt": ["VirtualMachine/ns/c"]}, listed
    )
    assert counts["vcsim"].missing == ["ns/x"]
    assert counts["vcsim"].duplicated == ["ns/b"]
    assert counts["libvirt"].not_running == ["VirtualMachine/ns/c"]
    r = report()
    simulator_checks(r, counts)
    assert verdict(r, "lost_vms") is False
    assert verdict(r, "duplicated_vms") is False
    assert verdict(r, "vms_not_running") is False
    fine = inventory.count_on_simulators({"vcsim": ["ns/a"]}, listed)
    r2 = report()
    simulator_checks(r2, fine)
    assert all(t.passed for t in r2.targets)


def test_the_simulators_are_listed_on_the_simulators_themselves(
    vcsim_info: VcsimInfo, libvirt_info: LibvirtInfo, pve_info: ProxmoxInfo, tmp_path: Path
) -> None:
    info = StackInfo(
        state_dir=str(tmp_path), vcsim=vcsim_info, libvirt=libvirt_info, proxmox=pve_info
    )
    listed = inventory.list_simulators(info, ["vcsim", "libvirt", "proxmox"])
    assert listed["vcsim"], "vcsim's model VMs are listed"
    assert any(v.name == "test" and v.running for v in listed["libvirt"])
    assert all(v.name for v in listed["proxmox"])  # templates are left out
    counts = inventory.count_on_simulators({"libvirt": ["vrscale/never-made"]}, listed)
    assert counts["libvirt"].missing == ["vrscale/never-made"]


# -- the rate limit, counted at the simulators -------------------------------------------------


def test_http_framer_counts_keep_alive_requests_across_any_split() -> None:
    stream = (
        b"POST /sdk HTTP/1.1\r\nContent-Length: 11\r\n\r\nhello\r\n\r\nx!"
        b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n"
        b"POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nab\r\n\r\n0\r\n\r\n"
        b"GET /b HTTP/1.1\r\n\r\n"
    )
    assert HttpRequestFramer().feed(stream) == 4
    for step in (1, 3, 7):
        f = HttpRequestFramer()
        assert sum(f.feed(stream[i : i + step]) for i in range(0, len(stream), step)) == 4


def rpc(prog: int, proc: int, kind: int, payload: bytes = b"") -> bytes:
    body = struct.pack(">IIiIIi", prog, 1, proc, kind, 7, 0) + payload
    return struct.pack(">I", len(body) + 4) + body


def test_libvirt_framer_counts_remote_calls_not_keepalives_or_replies() -> None:
    stream = (
        rpc(REMOTE_PROGRAM, 1, 0, b"x" * 9)
        + rpc(KEEPALIVE_PROGRAM, 1, 0)
        + rpc(REMOTE_PROGRAM, 2, 1)
        + rpc(REMOTE_PROGRAM, 3, 0)
    )
    f = LibvirtCallFramer()
    assert sum(f.feed(stream[i : i + 5]) for i in range(0, len(stream), 5)) == 2
    assert f.procedures == {1: 1, 3: 1}


def test_requests_bunched_at_the_simulator_are_windows_over_the_limit() -> None:
    steady = [i / 50 for i in range(200)]  # 50 a second for 4 s
    ok = wire_figures(steady, qps=50.0, burst=10.0, tokens_in_span=200.0, in_span=200)
    assert ok["windows_over_limit"] == 0 and ok["requests_per_token"] == 1.0
    bunched = sorted(steady + [2.0 + i / 1000 for i in range(20)])  # 20 more inside 20 ms
    over = wire_figures(bunched, qps=50.0, burst=10.0, tokens_in_span=200.0, in_span=220)
    assert (over["windows_over_limit"] or 0) > 0
    assert (over["max_tokens_in_window"] or 0) >= 70 and over["requests_per_token"] == 1.1
    r = report()
    r.check("ratelimit_windows_over", "d", float(over["windows_over_limit"]), "==", 0.0, "w")
    assert verdict(r, "ratelimit_windows_over") is False


async def test_the_http_proxy_counts_each_request_that_reaches_fakepve(
    pve_info: ProxmoxInfo,
) -> None:
    proxy = HttpCountingProxy("proxmox", pve_info.host, pve_info.port)
    await proxy.start()

    def requests() -> list[int]:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        conn = http.client.HTTPSConnection("127.0.0.1", proxy.port, context=ctx, timeout=10)
        auth = {"Authorization": f"PVEAPIToken={pve_info.token_id}={pve_info.token_secret}"}
        statuses = []
        for _ in range(5):  # one keep-alive connection
            conn.request("GET", "/api2/json/version", headers=auth)
            resp = conn.getresponse()
            resp.read()
            statuses.append(resp.status)
        conn.close()
        return statuses

    try:
        assert await asyncio.to_thread(requests) == [200] * 5
        await asyncio.sleep(0.05)
        assert len(proxy.arrivals) == 5 and proxy.connections == 1
    finally:
        await proxy.close()


async def test_the_libvirt_proxy_counts_each_rpc_call(
    libvirt_info: LibvirtInfo, tmp_path: Path
) -> None:
    import libvirt

    proxy = LibvirtCountingProxy("libvirt", libvirt_info.socket, tmp_path / "p.sock")
    await proxy.start()

    def calls() -> tuple[int, int]:
        conn = libvirt.open(proxy.uri)
        try:
            before = len(proxy.arrivals)
            for _ in range(10):
                conn.listAllDomains(0)
            time.sleep(0.05)
            return before, len(proxy.arrivals)
        finally:
            conn.close()

    try:
        before, after = await asyncio.to_thread(calls)
        assert before > 0, "opening the connection is a few calls too"
        assert after - before == 10
    finally:
        await proxy.close()


# -- queue waits -------------------------------------------------------------------------------


def start(
    ms: int, key: str, wait: float, lane: str = "direct", shard: str = "s0"
) -> dict[str, str]:
    return {"id": f"{ms}-0", "e": "start", "k": key, "w": str(wait), "l": lane, "s": shard}


def test_waits_are_exact_per_item_by_lane_and_joined_across_a_release() -> None:
    entries = [
        start(1000, "ns/a", 0.25),
        start(1100, "ns/b", 0.05, "urgent"),
        {"id": "2000-0", "e": "rel", "k": "ns/c", "w": "1.5", "s": "s0"},  # queued 1.5 s
        start(2600, "ns/c", 0.1, shard="s1"),  # at the new owner 0.1 s after its accept
        start(3000, "ns/c", 0.2, shard="s1"),  # a later add: its own wait
        {"id": "3100-0", "e": "end", "k": "ns/c", "s": "s1"},
    ]
    got = waits.item_waits(entries)
    assert [(w.key, round(w.wait, 3), w.lane, w.moved) for w in got] == [
        ("ns/a", 0.25, "direct", False),
        ("ns/b", 0.05, "urgent", False),
        ("ns/c", 2.1, "direct", True),  # from the add at s0 (0.5 s before 2.0) to 2.6
        ("ns/c", 0.2, "direct", False),
    ]
    fig = waits.figures(got)
    assert fig["new_work_s"]["n"] == 3 and fig["requeues_s"]["n"] == 1
    assert fig["p99_new_work_s"] == pytest.approx(2.1) and fig["moved_items"] == 1
    assert waits.worst_lane_p99(fig) == pytest.approx(2.1)
    r = report()
    r.check("p99_queue_wait", "d", waits.worst_lane_p99(fig), "<", 1.0, "s")
    assert verdict(r, "p99_queue_wait") is False


def test_slow_requeues_cannot_hide_behind_fast_new_work() -> None:
    fast_new = [start(1000 + i, f"ns/{i}", 0.01) for i in range(1000)]
    slow_requeues = [start(3000 + i, f"ns/r{i}", 3.0, "urgent") for i in range(10)]
    fig = waits.figures(waits.item_waits(fast_new + slow_requeues))
    assert fig["p99_all_s"] == 0.01, "mixed together, 1 % of slow items vanish from the p99"
    assert waits.worst_lane_p99(fig) == 3.0


def test_a_window_across_a_shard_resize_counts_retired_shards_and_nothing_outside() -> None:
    entries = [
        start(500_000, "ns/early", 9.0, shard="shard-5"),  # before the window: not counted
        start(1_001_000, "ns/a", 0.2, shard="shard-0"),
        start(1_002_000, "ns/b", 4.0, shard="shard-5"),  # a shard retired in the window
        start(1_003_000, "ns/c", 0.3, shard="shard-6"),  # a shard added in the window
    ]
    inside = [w for w in waits.item_waits(entries) if 1000.0 <= w.t <= 1010.0]
    fig = waits.figures(inside)
    assert fig["items_per_shard"] == {"shard-0": 1, "shard-5": 1, "shard-6": 1}
    assert fig["all_s"]["max"] == 4.0, "the retired shard's slow item is in the figure"
    r = report()
    r.check("p99_queue_wait", "d", waits.worst_lane_p99(fig), "<", 1.0, "s")
    assert verdict(r, "p99_queue_wait") is False


# -- churn: applied, or waiting for a power cycle ----------------------------------------------


def state(sim: str, seen: dict[int, list[Seen]]) -> VMState:
    return VMState(sim=sim, seen=seen)


def test_a_change_that_needs_a_power_cycle_is_never_counted_applied() -> None:
    applied = state("vcsim", {2: [Seen(10.0, False, 1, False), Seen(10.4, True, 2, False)]})
    cycle = state("libvirt", {2: [Seen(10.3, True, 1, True)]})  # Ready, CPU unchanged
    lie = state("proxmox", {2: [Seen(10.2, True, 1, False)]})  # Ready, CPU unchanged, no reason
    overtaken = state("vcsim", {3: [Seen(12.0, True, 1, False)]})
    changes = [
        Change("ns/a", 2, 10.0, cpu=2),
        Change("ns/b", 2, 10.0, cpu=2),
        Change("ns/c", 2, 10.0, cpu=2),
        Change("ns/d", 2, 10.0, cpu=2),
    ]
    states = {"ns/a": applied, "ns/b": cycle, "ns/c": lie, "ns/d": overtaken}
    got = [(c, *outcome(states[c.key], c)) for c in changes]
    assert [what for _, what, _ in got] == [APPLIED, POWER_CYCLE, NOT_APPLIED, SUPERSEDED]
    fig = change_figures(got, {k: s.sim for k, s in states.items()})
    assert fig["libvirt"][POWER_CYCLE] == 1 and fig["libvirt"][APPLIED] == 0
    assert fig["libvirt"]["change_to_applied_s"]["n"] == 0
    assert fig["vcsim"]["p99_change_to_applied_s"] == pytest.approx(0.4)
    assert fig["all"][NOT_APPLIED] == 1
    r = report()
    pending = fig["all"][NOT_APPLIED] + fig["all"]["unsettled"]
    r.check("changes_settled", "d", float(pending), "==", 0.0, "changes")
    assert verdict(r, "changes_settled") is False


# -- idle: the worst hour of the resync schedule -----------------------------------------------


def test_the_idle_projection_catches_a_fleet_that_resyncs_together() -> None:
    period = 36_000.0
    now = 1_700_000_000.0
    keys = [f"vrscale/vm-{i:05d}" for i in range(10_000)]
    # The old schedule: every key re-armed at 10 h +-10 % after converging together.
    bunched = [period * (0.9 + 0.2 * i / len(keys)) for i in range(len(keys))]
    bad = projected_worst_hour(bunched, calls_per_pass=1.5, window_calls_per_s=0.07)
    assert bad["worst_hour_passes"] >= 4900
    r = report()
    r.check("idle_hypervisor_calls", "d", bad["worst_hour_calls_per_s"], "<", 1.0, "calls/s")
    assert verdict(r, "idle_hypervisor_calls") is False
    spread = [resync_delay(k, period, now) for k in keys]
    good = projected_worst_hour(spread, calls_per_pass=1.5, window_calls_per_s=0.07)
    assert good["worst_hour_passes"] < 1150
    r.check("idle_hypervisor_calls", "d", good["worst_hour_calls_per_s"], "<", 1.0, "calls/s")
    assert verdict(r, "idle_hypervisor_calls") is True
