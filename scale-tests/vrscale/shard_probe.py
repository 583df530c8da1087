"""The shards' own view, asked of the shard actors directly: which keys each owns, its
lease, and when its delayed adds (requeues and per-key resyncs) are due.

The asking runs in a child process (``python -m vrscale.shard_probe``) that joins the
stack's Ray as a driver, so the measuring process never hosts a Ray core worker. It
prints one JSON snapshot on stdout. ``ownership`` turns a snapshot into the one-owner
figures: every VM key owned by exactly one live shard (answering, lease valid), none
owned by a fenced one, none owned that should not be.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from virtrigaud.dev.info import StackInfo

SCALE_TESTS = str(Path(__file__).resolve().parents[1])
VM_KIND = "VirtualMachine"
PROBE_TIMEOUT_S = 120.0


def vm_key(key: str) -> str | None:
    """namespace/name of a VirtualMachine key (plain, or Kind/namespace/name); None for
    another kind's key."""
    parts = key.split("/")
    if len(parts) == 2:
        return key
    if len(parts) == 3 and parts[0] == VM_KIND:
        return f"{parts[1]}/{parts[2]}"
    return None


@dataclass
class ShardView:
    actor: str
    ok: bool
    error: str = ""
    shard: str = ""
    incarnation: str = ""
    lease_remaining: float = 0.0
    owned: list[str] = field(default_factory=list)
    delays: list[float] | None = None
    """Seconds until each delayed add fires (None: the shard does not tell)."""

    @property
    def live(self) -> bool:
        return self.ok and self.lease_remaining > 0


@dataclass
class Ownership:
    live_shards: list[str]
    fenced_shards: list[str]
    silent_actors: list[str]
    unowned: list[str]
    multiply_owned: dict[str, list[str]]
    held_by_fenced: dict[str, list[str]]
    unexpected: list[str]
    owned_per_shard: dict[str, int]

    @property
    def problems(self) -> int:
        return (
            len(self.unowned)
            + len(self.multiply_owned)
            + len(self.held_by_fenced)
            + len(self.unexpected)
        )

    def figures(self, examples: int = 5) -> dict[str, Any]:
        return {
            "live_shards": self.live_shards,
            "fenced_shards": self.fenced_shards,
            "silent_actors": self.silent_actors,
            "owned_per_shard": self.owned_per_shard,
            "unowned": len(self.unowned),
            "unowned_examples": self.unowned[:examples],
            "multiply_owned": len(self.multiply_owned),
            "multiply_owned_examples": dict(list(self.multiply_owned.items())[:examples]),
            "held_by_fenced_shard": len(self.held_by_fenced),
            "held_by_fenced_examples": dict(list(self.held_by_fenced.items())[:examples]),
            "owned_but_not_expected": len(self.unexpected),
            "owned_but_not_expected_examples": self.unexpected[:examples],
        }


def ownership(views: list[ShardView], expected: Iterable[str]) -> Ownership:
    want = set(expected)
    owners: dict[str, list[str]] = {}
    fenced: dict[str, list[str]] = {}
    per_shard: dict[str, int] = {}
    for v in views:
        if not v.ok:
            continue
        name = v.shard or v.actor
        keys = {k for k in (vm_key(o) for o in v.owned) if k is not None}
        per_shard[name] = len(keys)
        table = owners if v.live else fenced
        for k in keys:
            table.setdefault(k, []).append(name)
    return Ownership(
        live_shards=sorted(v.shard or v.actor for v in views if v.live),
        fenced_shards=sorted(v.shard or v.actor for v in views if v.ok and not v.live),
        silent_actors=sorted(v.actor for v in views if not v.ok),
        unowned=sorted(k for k in want if k not in owners),
        multiply_owned={k: sorted(s) for k, s in sorted(owners.items()) if len(s) > 1},
        held_by_fenced={k: sorted(s) for k, s in sorted(fenced.items())},
        unexpected=sorted(k for k in owners if k not in want),
        owned_per_shard=dict(sorted(per_shard.items())),
    )


# -- the child process -----------------------------------------------------------------------


async def _ask(timeout: float) -> list[dict[str, Any]]:
    import ray
    import ray.util

    from virtrigaud.shards.actor import ACTOR_PREFIX, RAY_NAMESPACE

    names = sorted(
        str(e["name"])
        for e in ray.util.list_named_actors(all_namespaces=True)
        if e.get("namespace") == RAY_NAMESPACE and str(e.get("name", "")).startswith(ACTOR_PREFIX)
    )

    async def one(name: str) -> dict[str, Any]:
        try:
            actor = ray.get_actor(name, namespace=RAY_NAMESPACE)
            stats: Any = await asyncio.wait_for(actor.stats.remote(), timeout)
            owned = await asyncio.wait_for(actor.owned_keys.remote(), timeout)
            delays = None
            if hasattr(actor, "delayed_adds"):
                delays = await asyncio.wait_for(actor.delayed_adds.remote(), timeout)
        except Exception as e:
            return {"actor": name, "ok": False, "error": f"{type(e).__name__}: {e}"[:300]}
        return {
            "actor": name,
            "ok": True,
            "shard": stats.shard,
            "incarnation": stats.incarnation,
            "lease_remaining": stats.lease_remaining,
            "owned": list(owned),
            "delays": delays,
        }

    return list(await asyncio.gather(*(one(n) for n in names)))


def main() -> None:
    p = argparse.ArgumentParser(prog="vrscale.shard_probe")
    p.add_argument("--address", required=True)
    p.add_argument("--timeout", type=float, default=20.0)
    p.add_argument("--expected", type=Path, help="JSON list of VM keys: ask until consistent")
    p.add_argument("--settle", type=float, default=0.0, help="seconds to ask again")
    args = p.parse_args()
    import ray

    ray.init(address=args.address, logging_level=logging.ERROR, log_to_driver=False)
    expected = json.loads(args.expected.read_text()) if args.expected else None
    deadline = time.monotonic() + args.settle
    attempts = 0
    while True:
        attempts += 1
        got = asyncio.run(_ask(args.timeout))
        if expected is None or time.monotonic() >= deadline:
            break
        if ownership([ShardView(**g) for g in got], expected).problems == 0:
            break
        time.sleep(2.0)
    print(json.dumps({"attempts": attempts, "shards": got}))
    ray.shutdown()


def probe(
    info: StackInfo, expected: list[str] | None = None, settle_s: float = 0.0
) -> tuple[list[ShardView], int]:
    """Snapshot of every shard actor (blocking: run it in a thread). With expected keys the
    child asks again (every 2 s, up to settle_s) until ownership is consistent, so a
    handover still finishing is not taken for a lost key. Returns (views, attempts)."""
    if info.ray is None:
        raise RuntimeError("the dev stack runs no Ray: no shard actors to ask")
    argv = [sys.executable, "-m", "vrscale.shard_probe", "--address", info.ray.address]
    env = {**os.environ, **info.ray.env}
    env["PYTHONPATH"] = SCALE_TESTS + os.pathsep + env.get("PYTHONPATH", "")
    with tempfile.TemporaryDirectory(prefix="vrscale-probe-") as tmp:
        if expected is not None:
            path = Path(tmp) / "expected-keys.json"
            path.write_text(json.dumps(expected))
            argv += ["--expected", str(path), "--settle", str(settle_s)]
        out = subprocess.run(
            argv, env=env, capture_output=True, text=True, timeout=PROBE_TIMEOUT_S + settle_s
        )
    if out.returncode != 0:
        raise RuntimeError(f"asking the shard actors failed: {out.stderr.strip()[-1500:]}")
    data = json.loads(out.stdout.strip().splitlines()[-1])
    return [ShardView(**g) for g in data["shards"]], int(data["attempts"])


if __name__ == "__main__":
    main()
