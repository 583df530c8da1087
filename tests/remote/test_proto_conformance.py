"""Our provider.v1 descriptors against the recorded list of the Go original's protocol.

``data/upstream-provider-grpc-v1.json`` is the list of the original's services, messages,
field names, numbers, types and labels (a copy of ../shared/research/, kept here so the
test runs without it); the copy is checked against the shared file where that exists.
A second test fails when the checked-in generated module no longer matches the .proto.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from virtrigaud.providers.remote.pb import provider_pb2

ROOT = Path(__file__).resolve().parents[2]
LIST = Path(__file__).parent / "data" / "upstream-provider-grpc-v1.json"
SHARED = ROOT.parent / "shared" / "research" / "upstream-provider-grpc-v1.json"

_SCALARS = {
    FieldDescriptor.TYPE_STRING: "string",
    FieldDescriptor.TYPE_BYTES: "bytes",
    FieldDescriptor.TYPE_BOOL: "bool",
    FieldDescriptor.TYPE_INT32: "int32",
    FieldDescriptor.TYPE_INT64: "int64",
}


def type_name(field: FieldDescriptor) -> str:
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        key, value = (
            field.message_type.fields_by_name["key"],
            field.message_type.fields_by_name["value"],
        )
        return f"map<{type_name(key)}, {type_name(value)}>"
    if field.message_type is not None:
        return str(field.message_type.name)
    if field.enum_type is not None:
        return str(field.enum_type.name)
    return _SCALARS[field.type]


def label(field: FieldDescriptor) -> str:
    is_map = field.message_type is not None and field.message_type.GetOptions().map_entry
    return "repeated" if field.is_repeated and not is_map else ""


def ours() -> dict[str, object]:
    fd = provider_pb2.DESCRIPTOR
    service = fd.services_by_name["Provider"]
    messages: dict[str, list[dict[str, object]]] = {}
    for name, msg in fd.message_types_by_name.items():
        assert isinstance(msg, Descriptor)
        messages[name] = [
            {"name": f.name, "number": f.number, "type": type_name(f), "label": label(f)}
            for f in msg.fields
        ]
    return {
        "package": fd.package,
        "service_name": service.name,
        "service": {
            m.name: {"request": m.input_type.name, "response": m.output_type.name}
            for m in service.methods
        },
        "messages": messages,
        "enums": {
            name: {v.name: v.number for v in enum.values}
            for name, enum in fd.enum_types_by_name.items()
        },
    }


def test_the_copy_is_the_shared_list() -> None:
    if not SHARED.exists():
        pytest.skip(f"{SHARED} is absent (no ../shared beside this checkout); the copy is used")
    assert json.loads(LIST.read_text()) == json.loads(SHARED.read_text())


def test_descriptors_match_the_original() -> None:
    want = json.loads(LIST.read_text())
    got = ours()
    assert got["package"] == want["package"] == "provider.v1"
    assert got["service_name"] == want["service_name"] == "Provider"
    assert got["service"] == want["service"]
    assert got["enums"] == want["enums"]
    want_messages = want["messages"]
    got_messages = got["messages"]
    assert isinstance(got_messages, dict)
    assert sorted(got_messages) == sorted(want_messages)
    for name, fields in want_messages.items():
        by_number = sorted(fields, key=lambda f: f["number"])
        assert sorted(got_messages[name], key=lambda f: f["number"]) == by_number, name


def test_a_changed_field_is_caught() -> None:
    """The comparison is not vacuous: a renumbered field makes it fail."""
    want = json.loads(LIST.read_text())
    got = ours()
    messages = got["messages"]
    assert isinstance(messages, dict)
    messages["CreateRequest"][0]["number"] = 99
    assert sorted(messages["CreateRequest"], key=lambda f: f["number"]) != sorted(
        want["messages"]["CreateRequest"], key=lambda f: f["number"]
    )


def test_generated_module_matches_the_proto(tmp_path: Path) -> None:
    protoc = pytest.importorskip("grpc_tools.protoc")
    out = tmp_path / "set.pb"
    code = protoc.main(
        [
            "protoc",
            f"-I{ROOT / 'proto'}",
            f"--descriptor_set_out={out}",
            "provider/v1/provider.proto",
        ]
    )
    assert code == 0
    compiled = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file[0]
    # protoc fills in derived JSON names; the generated module stores the file without them.
    for message in compiled.message_type:
        for field in message.field:
            field.ClearField("json_name")
        for nested in message.nested_type:
            for field in nested.field:
                field.ClearField("json_name")
    checked_in = descriptor_pb2.FileDescriptorProto.FromString(
        provider_pb2.DESCRIPTOR.serialized_pb
    )
    assert compiled == checked_in, (
        "virtrigaud/providers/remote/pb/provider_pb2.py is stale: run `make proto`"
    )


def test_an_image_with_its_import_url_crosses_the_wire() -> None:
    from virtrigaud.providers.base import ImageSpec
    from virtrigaud.providers.remote import wire

    image = ImageSpec(template="tmpl", import_url="https://images.example/tiny.ova")
    assert wire.image_from(wire.image_doc("vsphere", image)) == image
    plain = ImageSpec(template="tmpl")
    assert wire.image_from(wire.image_doc("vsphere", plain)) == plain
    checked = ImageSpec(
        template="tmpl",
        import_url="https://x/y.ova",
        import_checksum="md5:ab",
        import_datastore="ds-2",
        import_folder="templates",
    )
    assert wire.image_from(wire.image_doc("vsphere", checked)) == checked
    # A document naming only a URL (as the Go controller sends one) keeps its old meaning.
    assert wire.image_from({"URL": "https://x/y.ova"}) == ImageSpec(template="https://x/y.ova")


def test_a_proxmox_images_clone_settings_cross_the_wire() -> None:
    from virtrigaud.providers.base import ImageSpec
    from virtrigaud.providers.remote import wire

    for image in (
        ImageSpec(template="tmpl-debian-12", node="pve1", storage="local-lvm"),
        ImageSpec(template="9000", node="pve1", linked_clone=True),
    ):
        assert wire.image_from(wire.image_doc("proxmox", image)) == image
    # Nothing said means a full clone onto the Provider's storage, as before.
    assert wire.image_doc("proxmox", ImageSpec(template="9000")).keys() == {
        "TemplateName",
        "Path",
        "URL",
    }


def test_a_vm_spec_crosses_the_wire_whole() -> None:
    """Create requests and clone documents carry every VMSpec field (a field added to
    VMSpec but not to the documents fails here)."""
    from virtrigaud.providers.base import DiskSpec, ImageSpec, NetworkSpec, Owner, VMSpec
    from virtrigaud.providers.remote import wire

    owner = Owner(namespace="ns", name="vm", uid="0b7e2c1a-2f1e-4a53-9a41-9d3e8f7c6b5a")
    spec = VMSpec(
        owner=owner,
        cpu=2,
        memory_mib=2048,
        image=ImageSpec(template="tmpl"),
        disks=(DiskSpec("root", 20), DiskSpec("data", 5)),
        networks=(NetworkSpec(network="VM Network"),),
        user_data="#cloud-config\n",
        meta_data="instance-id: x\n",
        placement={"datastore": "LocalDS_0"},
        tags={"team": "storage"},
        firmware="efi",
        extra_config={"svga.present": "TRUE"},
    )
    assert wire.spec_from_create(wire.create_request("vsphere", spec), owner) == spec
    assert wire.spec_from_document(wire.create_document("vsphere", spec), owner) == spec
