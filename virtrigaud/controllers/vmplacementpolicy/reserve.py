"""A VM's place under its VMPlacementPolicy, taken so that no two VMs take the same one,
whichever shards place them and however close together.

Every placement under a spread rule (hostAntiAffinity: its places can run out) goes
through ``reserve``:

1. read the policy as stored (GET: its resourceVersion);
2. list the policy's VMs (after 1);
3. count the places taken: the hosts the VMs' statuses record, and the policy's
   ``status.placementReservations`` of VMs that exist and record none yet; decide;
4. write the policy's status with this VM's reservation added, guarded by the
   resourceVersion read in 1, dropping the reservations that 2 showed are no longer
   needed (the VM records its host itself, or is gone or being deleted);
5. on a conflict (anyone wrote the policy meanwhile, e.g. another placement), from 1 again.

The VM then records the host in its own status and only then is created. Of two
placements that both succeed, the later one read the policy (1) after the earlier one's
write (4), so it counts the earlier reservation, or, when someone dropped it in between,
the earlier VM's own status: a reservation is dropped only by a writer whose listing
showed the VM recording its host (or gone), and the later listing (2) comes after that.
So a strict rule's last place goes to one VM only.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from typing import Any

from virtrigaud.controllers.vmplacementpolicy.rules import Decision
from virtrigaud.controllers.vmplacementpolicy.users import policy_users
from virtrigaud.fence import CLAIM
from virtrigaud.kube.client import ApiError, KubeClient
from virtrigaud.kube.resources import VM_PLACEMENT_POLICIES

JSON = dict[str, Any]

RESERVATIONS = "placementReservations"  # status field (api/vmplacementpolicy.py)
ATTEMPTS = 8
BACKOFF = 0.02  # seconds; a random wait up to this times the attempt number between tries

Choose = Callable[[dict[str, str], list[str]], Decision]
"""(VM name -> host of every place taken, the waiting VMs' names with this one) ->
the decision; raises rules.Unsatisfiable."""


async def reserve(
    kube: KubeClient,
    namespace: str,
    policy: str,
    me: str,
    choose: Choose,
    rng: random.Random | None = None,
) -> Decision:
    """Decide VM ``me``'s host with ``choose`` and reserve it in the policy's status."""
    rng = rng or random.Random()
    for attempt in range(ATTEMPTS):
        stored = await kube.get(VM_PLACEMENT_POLICIES, policy, namespace)
        users = await policy_users(kube, namespace, policy)
        live = set(users.names)
        status: JSON = stored.get("status") or {}
        kept = [
            r
            for r in status.get(RESERVATIONS) or []
            if r.get("vm") in live and r.get("vm") not in users.placed and r.get("vm") != me
        ]
        taken = {**users.placed, **{str(r["vm"]): str(r["host"]) for r in kept}}
        waiting = [n for n in users.waiting if n not in taken and n != me] + [me]
        decision = choose(taken, waiting)
        body = dict(stored)
        body["status"] = {**status, RESERVATIONS: [*kept, {"vm": me, "host": decision.host}]}
        claim = CLAIM.get()
        if claim is not None:
            claim.check()
        try:
            await kube.replace(VM_PLACEMENT_POLICIES, body, subresource="status")
            return decision
        except ApiError as e:
            if not e.conflict:
                raise
        await asyncio.sleep(rng.uniform(0, BACKOFF * (attempt + 1)))
    raise ApiError(
        409,
        "Conflict",
        f"VMPlacementPolicy {namespace}/{policy}: placing VirtualMachine {me} raced with "
        f"{ATTEMPTS} other writes of the policy in a row; it is placed on a later try",
    )
