"""The converge steps of a VM pass: settle tasks in flight, create (or adopt), observe,
reconfigure, power, report Ready.

No step waits for a hypervisor task beyond a few brief looks (``INLINE_TASK_POLLS``, at most
0.8 s for a create's first task: ``CREATE_TASK_POLLS``): a task
still running is recorded in ``status.lastTaskRef`` with its operation and the pass ends
with a requeue, so a handover or failover never waits on a reconcile and whichever shard
owns the key next resumes it. A create is a chain of tasks (the clone, then each step
``finish_create`` returns until DONE); the operation stays ``create`` until the last one
finished, and only then is the VM ``Created``.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from virtrigaud.api.common import parse_duration
from virtrigaud.api.conditions import get_condition
from virtrigaud.api.virtualmachine import (
    ADOPTED_VM_ID,
    FINALIZER,
    VirtualMachinePhase,
    VirtualMachineResources,
)
from virtrigaud.api.virtualmachine import PowerState as DesiredPower
from virtrigaud.controllers.virtualmachine.fields import report_unsupported_fields
from virtrigaud.controllers.virtualmachine.passbase import (
    ADOPTED_VM_NOT_FOUND,
    CLONED_BY,
    OP_ADOPT,
    OP_CREATE,
    OP_POWER,
    Blocked,
    Wait,
    task_done_locally,
)
from virtrigaud.controllers.virtualmachine.placement import PlacementSteps
from virtrigaud.controllers.virtualmachine.readiness import check_prepared
from virtrigaud.controllers.virtualmachine.revert import RevertSteps
from virtrigaud.controllers.virtualmachine.spec import (
    build_vm_spec,
    desired_resources,
    hardware_differences,
    resolve_class,
)
from virtrigaud.controllers.virtualmachine.status import (
    DELETING,
    LAST_TASK_OPERATION,
    NOTHING_CREATED,
    PROVISIONING,
    READY,
    RECONFIGURING,
    set_finalizer,
)
from virtrigaud.providers.base import (
    DONE,
    Busy,
    DiskInfo,
    NotFoundError,
    PowerOp,
    PowerState,
    Provider,
    ProviderError,
    Resources,
    RetryableError,
    TaskRef,
    TaskStatus,
    VMInfo,
    VMSpec,
    check_owner,
)

# After a VM vanished from the hypervisor, or a synchronous change needs a fresh look.
SOON = 0.5
# Inline looks at a power task before it is recorded and the pass requeued (seconds
# slept before each look).
INLINE_TASK_POLLS = (0.05, 0.25)
# Looks at a create's first task (a clone often takes longer than a power change): one
# more before it is recorded, which costs a status write and another pass.
CREATE_TASK_POLLS = (0.05, 0.25, 0.5)
DEFAULT_GRACEFUL_TIMEOUT = 60.0
# The power state a power operation ends in (a reboot ends where it started).
POWER_AFTER = {
    PowerOp.ON: PowerState.ON,
    PowerOp.OFF: PowerState.OFF,
    PowerOp.OFF_GRACEFUL: PowerState.OFF,
}
# Create steps one pass runs at most before it requeues (each may look at a task briefly).
CREATE_STEPS_PER_PASS = 6


class ConvergeSteps(RevertSteps, PlacementSteps):
    created_now = False
    """This pass finished the VM's create (its last step ended): nothing else has touched
    the new VM yet."""

    async def converge(self) -> None:
        provider, defaults, provider_type = await self.provider()
        vm_class = await resolve_class(self.resolver, self.vm)
        spec = await build_vm_spec(self.resolver, self.vm, vm_class, provider_type, defaults)
        self.memory.dependencies_met(self.key)
        policy = await self.policy()
        await report_unsupported_fields(self, provider_type, vm_class, policy)
        self.st.drop_condition(DELETING)
        if not self.status.id and not self.status.last_task_ref:
            await check_prepared(self.resolver, self.vm, self.vm_ref())
        spec = await self.place(provider, provider_type, spec, policy)

        recorded = self.recorded_state()
        await self.settle_tasks(provider, spec)
        info = await self.ensure_exists(provider, spec)
        if info is None:
            return
        if recorded is not None:
            self.note_drift(recorded, info)
        info = await self.revert(provider, info)
        # Hardware changes go in while the VM is off when the spec allows it: a VM headed
        # for Off is powered off first, one headed for On is powered on last.
        if self.vm.spec.power_state != DesiredPower.ON:
            info = await self.ensure_power(provider, info)
        desired = desired_resources(self.vm, vm_class)
        await self.reconfigure(provider, info, desired)
        powered = await self.ensure_power(provider, info)
        if powered is not info:
            # A power change can land a pending CPU or memory change (or show one did not
            # take): look again, as the next pass would. Disks do not change with power
            # (the look after a power change leaves them out); they were checked above.
            await self.reconfigure(provider, powered, replace(desired, disks=()))
        await self.converged(powered)
        self.endpoints.confirm(provider)

    async def settle_tasks(self, provider: Provider, spec: VMSpec) -> None:
        """Follow up tasks started by an earlier pass (possibly by another process)."""
        if self.status.last_task_ref:
            state = await self.poll_task(provider, self.status.last_task_ref)
            if not state.done:
                message = (
                    f"waiting for hypervisor task {self.status.last_task_ref} "
                    f"({self.operation() or 'unknown operation'})"
                )
                if self.operation() == OP_CREATE:
                    self.st.phase(VirtualMachinePhase.PROVISIONING)
                    self.st.condition(PROVISIONING, True, "TaskInProgress", message)
                self.st.condition(READY, False, "TaskInProgress", message)
                raise await self.wait_for_task()
            operation = self.operation()
            self.memory.task_settled(self.key)
            if operation in (OP_CREATE, OP_ADOPT) and state.error is None:
                await self.finish_create(provider, spec, state, operation)
                return
            self.status.last_task_ref = None
            self.status.provider.pop(LAST_TASK_OPERATION, None)
            if state.error is not None:
                raise state.error
            await self.task_finished(operation)
        if self.status.reconfigure_task_ref:
            state = await self.poll_task(provider, self.status.reconfigure_task_ref)
            if not state.done:
                raise await self.wait_for_task()
            self.status.reconfigure_task_ref = None
            self.memory.task_settled(self.key)
            if state.error is not None:
                self.st.condition(RECONFIGURING, False, "ReconfigureFailed", str(state.error))
                raise state.error

    async def ensure_exists(self, provider: Provider, spec: VMSpec) -> VMInfo | None:
        adopted_now = False
        if not self.status.id and self.owner.adopted_id is not None:
            # An adopted VM exists already: it is looked at, never created (nor recreated).
            stored, _ = await set_finalizer(self.ctx.kube, self.obj, FINALIZER, True)
            self.remember(stored)
            self.status.id = self.owner.adopted_id
            adopted_now = True
        if not self.status.id:
            # The finalizer is the durable intent to create: it is stored (guarded by
            # resourceVersion) before any create, so a VM that never got it has nothing on
            # the hypervisor and deletes without its Provider. When this pass is the one
            # that stored it, no create was ever attempted and there is nothing to find;
            # when it was there already, an earlier pass (maybe in a process that died)
            # may have created the VM.
            cloner = (self.obj["metadata"].get("annotations") or {}).get(CLONED_BY)
            if cloner:
                # A VMClone makes this VM's hypervisor VM; it is adopted (found by its owner
                # tag) once the clone removed the annotation.
                raise Blocked(
                    "WaitingForClone",
                    f"{self.vm_ref()} is being cloned by VMClone {self.owner.namespace}/"
                    f"{cloner}; it is adopted when the clone has finished",
                )
            stored, added = await set_finalizer(self.ctx.kube, self.obj, FINALIZER, True)
            self.remember(stored)
            nothing_sent = added or self.st.reason_of(PROVISIONING) == NOTHING_CREATED
            absent = nothing_sent or self.memory.known_absent(self.key)
            found = None
            if not absent or not self.endpoints.answered(provider):
                found = await self.look_before_create(provider, nothing_sent)
                if absent and found is not None and found.owner != self.owner:
                    # Nothing of ours can exist: a VM found by name belongs to someone
                    # else, and the create decides what that means on this hypervisor.
                    found = None
            if found is not None:
                # An earlier pass (maybe in a process that died) created it; the tag says
                # whether it is ours to adopt.
                check_owner(found, self.owner)
                self.status.id = found.id
                await self.save()
                await self.event(
                    "Normal", "Adopted", f"found {self.hv_ref()} from an earlier attempt"
                )
                # That attempt may have stopped before the VM was finished.
                self.record_task(OP_ADOPT, DONE)
                await self.finish_create(provider, spec, TaskStatus(done=True), OP_ADOPT)
            else:
                message = f"creating hypervisor VM {spec.name}"
                stored_nothing_created = self.st.reason_of(PROVISIONING) == NOTHING_CREATED
                self.st.phase(VirtualMachinePhase.PROVISIONING)
                self.st.condition(PROVISIONING, True, "Creating", message)
                self.st.condition(READY, False, "Provisioning", message)
                if stored_nothing_created:
                    # Status must stop saying "nothing created" before a create is sent:
                    # a delete trusting it would leave the new VM behind.
                    await self.save()
                # Nothing of ours exists (see above) and this shard alone acts for the key.
                try:
                    vm_id, task = await provider.create(spec, known_absent=True)
                except Busy:
                    # Nothing was started, so the next pass need not look for a VM.
                    self.memory.nothing_created(self.key)
                    raise
                self.memory.create_started(self.key)
                await self.audit(OP_CREATE)
                self.status.id = vm_id or None
                self.record_task(OP_CREATE, task)
                await self.run_create(provider, spec, task)
                # Finished within this pass: no write of its own (it would cost an API
                # write and its watch echo per VM). This pass goes on and stores status.id
                # at its end; if it stops before that, the finalizer makes the next pass
                # find the VM by its owner tag and adopt it.
        known_id = self.status.id
        if not known_id:  # a create that ended names its VM (finish_create below)
            raise RetryableError(f"{self.vm_ref()}: no hypervisor VM id after its create")
        if self.created_now and self.vm.spec.power_state == DesiredPower.ON:
            # The create this pass finished says what a look would: the VM exists, is off
            # and has the spec's hardware. The power-on comes next and is followed by one
            # real look, which the hardware is checked against again.
            info = created_info(known_id, spec)
        else:
            try:
                info = await provider.describe(known_id, snapshots=False)
            except NotFoundError:
                await self.vanished()
                return None
        check_owner(info, self.owner)
        if adopted_now:
            await self.event(
                "Normal",
                "Adopted",
                f"adopted {self.hv_ref()} ({info.name!r}) as it is; nothing was changed on "
                "the hypervisor",
            )
        self.observe(info)
        # It exists and its create is over: whatever this pass still does, it is no longer
        # provisioning.
        self.st.condition(PROVISIONING, False, "Provisioned", f"{self.hv_ref()} exists")
        if self.status.phase not in (
            VirtualMachinePhase.RUNNING,
            VirtualMachinePhase.STOPPED,
            VirtualMachinePhase.RECONFIGURING,
        ):
            on = info.power_state == PowerState.ON
            self.st.phase(VirtualMachinePhase.RUNNING if on else VirtualMachinePhase.STOPPED)
        return info

    async def look_before_create(self, provider: Provider, nothing_sent: bool) -> VMInfo | None:
        """Find this object's VM by its owner tag before creating one. Done when an earlier
        attempt may have created it, and before the first create on an endpoint that has
        not answered this process yet: when this read fails and no create was ever sent,
        status records that nothing exists, so a delete needs nothing from the hypervisor."""
        try:
            found = await provider.find(self.owner)
        except ProviderError as e:
            if nothing_sent and not isinstance(e, Busy):
                self.st.condition(
                    PROVISIONING,
                    False,
                    NOTHING_CREATED,
                    f"no create call was sent: the hypervisor refused the read before it "
                    f"({e}); nothing exists on the hypervisor for {self.vm_ref()}, so "
                    "deleting it completes at once",
                )
            raise
        self.endpoints.confirm(provider)
        return found

    # ------------------------------------------------------------------ create steps

    async def run_create(self, provider: Provider, spec: VMSpec, task: TaskRef) -> None:
        """Follow the create's task (recorded in status) briefly; once it finished, finish
        the VM. Raises Wait with the task recorded when it takes longer."""
        state = TaskStatus(done=True)
        if not task_done_locally(task):
            found = await self.brief_wait(provider, task, CREATE_TASK_POLLS)
            if found is None:
                # status.id and the task must be stored before anything waits on them.
                raise await self.wait_for_task()
            state = found
        await self.finish_create(provider, spec, state, OP_CREATE)

    async def finish_create(
        self, provider: Provider, spec: VMSpec, state: TaskStatus, operation: str
    ) -> None:
        """The create's last task (recorded in status) ended with state: ask finish_create
        for the next step until it is DONE, each step recorded like the first task; then
        the create (or the finishing of an adopted VM) is over. A step that takes longer
        ends the pass with a requeue."""
        for _ in range(CREATE_STEPS_PER_PASS):
            if state.error is not None:
                self.clear_task()
                raise state.error
            if state.result:
                # Some hypervisors name the new VM only when the task ends.
                self.status.id = state.result
            vm_id = self.status.id or await self.name_created_vm(provider)
            try:
                step = await provider.finish_create(vm_id, spec)
            except NotFoundError:
                await self.vanished()  # the create's VM went away before it was finished
                return
            if task_done_locally(step):
                self.clear_task()
                await self.task_finished(operation)
                self.created_now = operation == OP_CREATE
                return
            await self.audit(OP_CREATE)
            self.record_task(operation, step)
            found = await self.brief_wait(provider, step)
            if found is None:
                raise await self.wait_for_task()
            state = found
        # Many quick steps: let other keys have the worker; the next pass goes on.
        await self.save()
        raise Wait(SOON)

    async def name_created_vm(self, provider: Provider) -> str:
        """A create task ended without naming its VM: find it by its owner tag."""
        found = await provider.find(self.owner)
        if found is None:
            self.clear_task()
            raise RetryableError(
                f"{self.vm_ref()}: the hypervisor's create task ended without naming the VM "
                "and no VM carries this object's owner tag; it is created again"
            )
        check_owner(found, self.owner)
        self.status.id = found.id
        return found.id

    async def vanished(self) -> None:
        if self.owner.adopted_id is not None:
            # Not ours to create: what it ran (its disks, its guest) is not known here.
            vm_id = self.owner.adopted_id
            self.status.id = None
            self.status.power_state = None
            self.status.ips = []
            raise Blocked(
                ADOPTED_VM_NOT_FOUND,
                f"{self.vm_ref()} adopts hypervisor VM {vm_id} (annotation {ADOPTED_VM_ID}), "
                "which does not exist on its Provider; it is never created in its place: "
                "correct the annotation, or delete this VirtualMachine",
            )
        message = f"{self.hv_ref()} no longer exists on the hypervisor; creating it again"
        self.status.id = None
        self.status.last_task_ref = None
        self.status.reconfigure_task_ref = None
        self.status.power_state = None
        self.status.ips = []
        self.status.console_url = None
        self.st.not_ready("Recreating", message, VirtualMachinePhase.PROVISIONING)
        self.st.condition(PROVISIONING, True, "Recreating", message)
        await self.save()
        await self.event("Warning", "Recreating", message)
        raise Wait(SOON)

    def observe(self, info: VMInfo) -> None:
        if info.power_state == PowerState.ON:
            self.status.power_state = DesiredPower.ON
        elif info.power_state == PowerState.OFF:
            self.status.power_state = DesiredPower.OFF
        else:
            self.status.power_state = None
        self.status.ips = list(info.ips)
        self.status.console_url = info.console_url
        self.status.current_resources = VirtualMachineResources(
            cpu=info.cpu, memory_mib=info.memory_mib
        )
        self.observe_host(info)

    # ------------------------------------------------------------------ drift

    def recorded_state(self) -> tuple[DesiredPower | None, VirtualMachineResources | None] | None:
        """What the last pass saw when it left this generation converged with nothing in
        flight (power state, resources); None otherwise (then a difference is no drift)."""
        status = self.status
        ready = get_condition(status.conditions, READY)
        if (
            ready is None
            or ready.status.value != "True"
            or status.observed_generation != self.st.generation
            or status.last_task_ref
            or status.reconfigure_task_ref
        ):
            return None
        return status.power_state, status.current_resources

    def note_drift(
        self,
        recorded: tuple[DesiredPower | None, VirtualMachineResources | None],
        info: VMInfo,
    ) -> None:
        """Remember what changed on the hypervisor behind our back since the converged
        pass (the pass that corrects it names it in a DriftCorrected Event)."""
        power, resources = recorded
        diffs = []
        if power is not None and self.status.power_state != power:
            now = self.status.power_state.value if self.status.power_state else "unknown"
            diffs.append(f"power state {now}, was {power.value}")
        if resources is not None:
            if resources.cpu is not None and info.cpu != resources.cpu:
                diffs.append(f"cpu {info.cpu}, was {resources.cpu}")
            if resources.memory_mib is not None and info.memory_mib != resources.memory_mib:
                diffs.append(f"memory {info.memory_mib} MiB, was {resources.memory_mib} MiB")
        if diffs:
            self.memory.drift_found(self.key, "; ".join(diffs))

    # ------------------------------------------------------------------ reconfigure

    def held_back(self) -> bool:
        """A reconfigure of this generation already went as far as it can without the user
        (a power cycle), or did not take; repeating it every pass would only spend calls."""
        cond = get_condition(self.status.conditions, RECONFIGURING)
        if cond is None or cond.observed_generation != self.st.generation:
            return False
        if cond.reason == "PowerCycleRequired":
            return True
        if cond.reason == "NotApplied":
            # Retry once per sweep period (the sweep queues VMs still reconfiguring), so
            # drift still gets corrected eventually.
            age = datetime.now(UTC) - cond.last_transition_time
            return age < timedelta(seconds=self.ctx.sweep_period)
        return False

    async def reconfigure(self, provider: Provider, info: VMInfo, desired: Resources) -> None:
        diffs = hardware_differences(desired, info)
        if not diffs:
            if self.st.reason_of(RECONFIGURING) not in (None, "Reconfigured"):
                # The change landed (online, by a task, or with the user's power cycle).
                message = f"{self.hv_ref()} has cpu {info.cpu}, memory {info.memory_mib} MiB"
                self.st.condition(RECONFIGURING, False, "Reconfigured", message)
                await self.event("Normal", "Reconfigured", f"reconfigured {message}")
            return
        if self.held_back():
            return
        summary = ", ".join(diffs)
        # The same differences after an applied reconfigure: it did not take. Different
        # ones: it made progress (a provider grows one disk per reconfigure).
        before = get_condition(self.status.conditions, RECONFIGURING)
        applied_before = (
            before is not None
            and before.reason == "Applied"
            and before.message == f"reconfiguring: {summary}"
        )
        result = await provider.reconfigure(info.id, self.owner, desired)
        await self.audit("reconfigure")
        self.st.phase(VirtualMachinePhase.RECONFIGURING)
        if result.needs_power_cycle:
            pending = ", ".join(result.pending) or summary
            message = (
                f"{self.hv_ref()} takes {pending} only after a power cycle; power it off and "
                "on (spec.powerState Off, then On) when convenient"
            )
            self.st.condition(RECONFIGURING, True, "PowerCycleRequired", message)
            await self.event("Warning", "PowerCycleRequired", message)
        elif applied_before:
            message = f"{self.hv_ref()} still differs after a reconfigure ({summary})"
            self.st.condition(RECONFIGURING, True, "NotApplied", message)
            await self.event("Warning", "ReconfigureNotApplied", message)
        else:
            self.st.condition(RECONFIGURING, True, "Applied", f"reconfiguring: {summary}")
        if result.task is not None and not task_done_locally(result.task):
            self.status.reconfigure_task_ref = result.task
            raise await self.wait_for_task()
        if not result.needs_power_cycle:
            # Look again so currentResources shows what the hypervisor now has.
            await self.save()
            raise Wait(SOON)

    # ------------------------------------------------------------------ power

    async def ensure_power(self, provider: Provider, info: VMInfo) -> VMInfo:
        desired = self.vm.spec.power_state
        op: PowerOp | None = None
        if desired == DesiredPower.ON and info.power_state != PowerState.ON:
            op = PowerOp.ON
        elif desired != DesiredPower.ON and info.power_state == PowerState.ON:
            # OffGraceful converges on an observed Off just like Off does.
            op = PowerOp.OFF_GRACEFUL if desired == DesiredPower.OFF_GRACEFUL else PowerOp.OFF
        if op is None:
            return info
        task = await provider.power(info.id, self.owner, op, self.graceful_timeout(), known=info)
        await self.audit(f"{OP_POWER}{op.value}")
        operation = f"{OP_POWER}{op.value}"
        if not task_done_locally(task):
            wanted = POWER_AFTER.get(op)
            polls: tuple[float, ...] = INLINE_TASK_POLLS
            if wanted is not None:
                # The look status needs after the change doubles as the first look at its
                # task: a VM seen in the wanted state needs no task read at all.
                await asyncio.sleep(INLINE_TASK_POLLS[0])
                seen = await provider.describe(info.id, snapshots=False, disks=False)
                if seen.power_state == wanted:
                    await self.task_finished(operation)
                    return seen
                polls = INLINE_TASK_POLLS[1:]
            # Power tasks usually end within a second: look a couple of times before
            # recording the task and requeueing, which costs a status write and a pass.
            # Safe to lose: a pass that dies here finds the power state by describe and
            # asks again only if it still differs.
            state = await self.brief_wait(provider, task, polls)
            if state is None:
                await self.start_task(operation, task)
                self.st.condition(READY, False, "PowerChanging", f"{op.value} {self.hv_ref()}")
                raise await self.wait_for_task()
            if state.error is not None:
                raise state.error
        await self.task_finished(operation)
        # One look after the power change: what status reports (power state, addresses).
        return await provider.describe(info.id, snapshots=False, disks=False)

    async def brief_wait(
        self, provider: Provider, task: TaskRef, polls: tuple[float, ...] = INLINE_TASK_POLLS
    ) -> TaskStatus | None:
        """The task's end state if it ends within the inline budget, else None."""
        for delay in polls:
            await asyncio.sleep(delay)
            state = await provider.task_status(task)
            if state.done:
                return state
        return None

    def graceful_timeout(self) -> float:
        lifecycle = self.vm.spec.lifecycle
        if lifecycle is None:
            return DEFAULT_GRACEFUL_TIMEOUT
        return parse_duration(lifecycle.graceful_shutdown_timeout).total_seconds()

    async def converged(self, info: VMInfo) -> None:
        self.observe(info)
        on = info.power_state == PowerState.ON
        self.st.phase(VirtualMachinePhase.RUNNING if on else VirtualMachinePhase.STOPPED)
        self.st.condition(PROVISIONING, False, "Provisioned", f"{self.hv_ref()} exists")
        message = f"{self.hv_ref()} is {'running' if on else 'powered off'}"
        self.st.condition(READY, True, "Running" if on else "Stopped", message)
        self.status.message = message
        self.status.observed_generation = self.st.generation
        await self.save()
        if self.st.reason_of(RECONFIGURING) in (None, "Reconfigured"):
            drift = self.memory.drift_corrected(self.key)
            if drift:
                await self.event(
                    "Normal",
                    "DriftCorrected",
                    f"{self.hv_ref()} had drifted from its spec ({drift}); corrected",
                )


def created_info(vm_id: str, spec: VMSpec) -> VMInfo:
    """What a create that just finished left: the VM, off, with the spec's hardware."""
    return VMInfo(
        id=vm_id,
        name=spec.name,
        power_state=PowerState.OFF,
        cpu=spec.cpu,
        memory_mib=spec.memory_mib,
        owner=spec.owner,
        disks=tuple(DiskInfo(d.name, float(d.size_gib)) for d in spec.disks),
    )
