"""The phase/condition table: docs show it as it is, and settled statuses agree with it."""

from __future__ import annotations

from pathlib import Path

from virtrigaud.api.conditions import set_condition
from virtrigaud.api.virtualmachine import VirtualMachinePhase, VirtualMachineStatus
from virtrigaud.controllers.virtualmachine import phases
from virtrigaud.controllers.virtualmachine.status import StatusBuilder

DOC = Path(__file__).resolve().parents[2] / "docs" / "vm-conditions.md"


def test_docs_show_the_table() -> None:
    assert phases.markdown_table() in DOC.read_text()


def _status(phase: VirtualMachinePhase, **conditions: bool) -> VirtualMachineStatus:
    status = VirtualMachineStatus(phase=phase)
    for type_, value in conditions.items():
        set_condition(status.conditions, type_, value, "Because", "")
    return status


def test_a_failed_vm_is_no_longer_provisioning() -> None:
    builder = StatusBuilder({"metadata": {"generation": 2}, "status": {}})
    builder.status.phase = VirtualMachinePhase.PROVISIONING
    builder.condition("Provisioning", True, "Creating", "creating hypervisor VM x")
    builder.not_ready("ProviderTerminal", "the template does not exist", VirtualMachinePhase.FAILED)
    dumped = builder.dump()
    provisioning = [c for c in dumped["conditions"] if c["type"] == "Provisioning"]
    assert provisioning[0]["status"] == "False" and provisioning[0]["reason"] == "Failed"
    assert provisioning[0]["message"] == "the template does not exist"
    assert phases.violations(VirtualMachineStatus.model_validate(dumped)) == []


def test_settle_leaves_no_stale_provisioning_or_deleting() -> None:
    for phase in VirtualMachinePhase:
        for ready in (True, False):
            for provisioning in (True, False):
                for deleting in (True, False):
                    status = _status(
                        phase, Ready=ready, Provisioning=provisioning, Deleting=deleting
                    )
                    phases.settle(status, 1)
                    found = phases.violations(status)
                    # What settle cannot close (Ready=True where the table says False, a
                    # Provisioning phase without Provisioning=True) the passes never write
                    # (the VM tests check every status they see); the check names it.
                    assert "Provisioning=True" not in " ".join(found), (phase, found)
                    assert "Deleting=True" not in " ".join(found), (phase, found)
                    if ready and "True" not in phases.ALLOWED[phase]["Ready"]:
                        assert f"phase {phase.value} with Ready=True" in found


def test_violations_name_what_disagrees() -> None:
    status = _status(VirtualMachinePhase.FAILED, Ready=False, Provisioning=True)
    assert phases.violations(status) == ["phase Failed with Provisioning=True"]
