"""`virtrigaud crds apply` against an API server of its own (the dev stack's kubelite).

The chart's CRDs as an older `helm install` left them (here: the VirtualMachine CRD
without `spec.tags` and its Shard column, written by a client-side replace as Helm does)
are brought to this version's by a server-side apply that takes those fields over; a
dry run changes nothing; a second apply reports every CRD unchanged; a VM using the new
field is refused before and accepted after.
"""

from __future__ import annotations

import copy
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from api_stack import KUBECTL
from typer.testing import CliRunner

from virtrigaud.api.crdgen import all_crds
from virtrigaud.cli import app
from virtrigaud.dev.config import StackConfig
from virtrigaud.dev.info import KubeInfo
from virtrigaud.dev.stack import DevStack

pytestmark = pytest.mark.stack

VM_CRD = "virtualmachines.infra.virtrigaud.io"


@pytest.fixture(scope="module")
def kubeconfig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A private API server: this test rewrites CRDs every other test relies on."""
    stack = DevStack(tmp_path_factory.mktemp("crds-apply"), StackConfig())
    try:
        info = stack.ensure("kube")
        assert isinstance(info, KubeInfo)
        yield info.kubeconfig
    finally:
        stack.down()


def kubectl(
    kubeconfig: str, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [KUBECTL, "--kubeconfig", kubeconfig, *args],
        input=stdin, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def served_crd(kubeconfig: str) -> dict[str, Any]:
    done = kubectl(kubeconfig, "get", "crd", VM_CRD, "-o", "json", "--show-managed-fields")
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def spec_of(crd: dict[str, Any]) -> dict[str, Any]:
    version: dict[str, Any] = crd["spec"]["versions"][0]
    return version


def older_vm_crd() -> dict[str, Any]:
    (crd,) = [copy.deepcopy(c) for c in all_crds() if c["metadata"]["name"] == VM_CRD]
    version = spec_of(crd)
    del version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["tags"]
    columns = version["additionalPrinterColumns"]
    version["additionalPrinterColumns"] = [c for c in columns if c["name"] != "Shard"]
    return crd


def a_vm_with_tags() -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "infra.virtrigaud.io/v1beta1",
            "kind": "VirtualMachine",
            "metadata": {"name": "tagged", "namespace": "default"},
            "spec": {
                "providerRef": {"name": "p"},
                "classRef": {"name": "c"},
                "imageRef": {"name": "i"},
                "tags": ["team-a"],
            },
        }
    )


def crds_apply(kubeconfig: str, *args: str) -> dict[str, str]:
    result = CliRunner().invoke(app, ["crds", "apply", "--kubeconfig", kubeconfig, *args])
    assert result.exit_code == 0, result.output
    return dict(line.split(": ", 1) for line in result.output.splitlines())


def test_crds_apply_upgrades_what_helm_installed(kubeconfig: str, tmp_path: Path) -> None:
    # What an older chart's `helm install` left: a client-side replace of the CRD.
    old = tmp_path / "old.yaml"
    current = served_crd(kubeconfig)
    older = older_vm_crd()
    older["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
    old.write_text(yaml.safe_dump(older))
    done = kubectl(kubeconfig, "replace", "--field-manager", "helm", "-f", str(old))
    assert done.returncode == 0, done.stderr
    assert (
        "tags"
        not in spec_of(served_crd(kubeconfig))["schema"]["openAPIV3Schema"]["properties"]["spec"][
            "properties"
        ]
    )
    refused = kubectl(kubeconfig, "apply", "--dry-run=server", "-f", "-", stdin=a_vm_with_tags())
    assert refused.returncode != 0 and 'unknown field "spec.tags"' in refused.stderr, refused

    names = sorted(c["metadata"]["name"] for c in all_crds())
    dry = crds_apply(kubeconfig, "--dry-run")
    assert sorted(dry) == names
    assert dry[VM_CRD] == "configured (server dry run)"
    assert {v for k, v in dry.items() if k != VM_CRD} == {"unchanged (server dry run)"}
    still = spec_of(served_crd(kubeconfig))["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert "tags" not in still["properties"]

    applied = crds_apply(kubeconfig)
    assert applied[VM_CRD] == "configured"
    assert {v for k, v in applied.items() if k != VM_CRD} == {"unchanged"}
    served = spec_of(served_crd(kubeconfig))
    (ours,) = [spec_of(c) for c in all_crds() if c["metadata"]["name"] == VM_CRD]
    assert served["schema"] == ours["schema"]
    assert served["additionalPrinterColumns"] == ours["additionalPrinterColumns"]
    managers = {m["manager"] for m in served_crd(kubeconfig)["metadata"]["managedFields"]}
    assert "virtrigaud-crds" in managers
    accepted = kubectl(kubeconfig, "apply", "--dry-run=server", "-f", "-", stdin=a_vm_with_tags())
    assert accepted.returncode == 0, accepted.stderr

    assert set(crds_apply(kubeconfig).values()) == {"unchanged"}
