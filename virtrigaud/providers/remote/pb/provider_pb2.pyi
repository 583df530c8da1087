from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PowerOp(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    POWER_OP_UNSPECIFIED: _ClassVar[PowerOp]
    POWER_OP_ON: _ClassVar[PowerOp]
    POWER_OP_OFF: _ClassVar[PowerOp]
    POWER_OP_REBOOT: _ClassVar[PowerOp]
    POWER_OP_SHUTDOWN_GRACEFUL: _ClassVar[PowerOp]
POWER_OP_UNSPECIFIED: PowerOp
POWER_OP_ON: PowerOp
POWER_OP_OFF: PowerOp
POWER_OP_REBOOT: PowerOp
POWER_OP_SHUTDOWN_GRACEFUL: PowerOp

class TaskRef(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class Empty(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ValidateRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ValidateResponse(_message.Message):
    __slots__ = ("ok", "message")
    OK_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ok: bool
    message: str
    def __init__(self, ok: _Optional[bool] = ..., message: _Optional[str] = ...) -> None: ...

class CreateRequest(_message.Message):
    __slots__ = ("name", "user_data", "class_json", "image_json", "networks_json", "disks_json", "placement_json", "tags", "meta_data")
    NAME_FIELD_NUMBER: _ClassVar[int]
    USER_DATA_FIELD_NUMBER: _ClassVar[int]
    CLASS_JSON_FIELD_NUMBER: _ClassVar[int]
    IMAGE_JSON_FIELD_NUMBER: _ClassVar[int]
    NETWORKS_JSON_FIELD_NUMBER: _ClassVar[int]
    DISKS_JSON_FIELD_NUMBER: _ClassVar[int]
    PLACEMENT_JSON_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    META_DATA_FIELD_NUMBER: _ClassVar[int]
    name: str
    user_data: bytes
    class_json: str
    image_json: str
    networks_json: str
    disks_json: str
    placement_json: str
    tags: _containers.RepeatedScalarFieldContainer[str]
    meta_data: bytes
    def __init__(self, name: _Optional[str] = ..., user_data: _Optional[bytes] = ..., class_json: _Optional[str] = ..., image_json: _Optional[str] = ..., networks_json: _Optional[str] = ..., disks_json: _Optional[str] = ..., placement_json: _Optional[str] = ..., tags: _Optional[_Iterable[str]] = ..., meta_data: _Optional[bytes] = ...) -> None: ...

class CreateResponse(_message.Message):
    __slots__ = ("id", "task")
    ID_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    id: str
    task: TaskRef
    def __init__(self, id: _Optional[str] = ..., task: _Optional[_Union[TaskRef, _Mapping]] = ...) -> None: ...

class DeleteRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class PowerRequest(_message.Message):
    __slots__ = ("id", "op", "graceful_timeout_seconds")
    ID_FIELD_NUMBER: _ClassVar[int]
    OP_FIELD_NUMBER: _ClassVar[int]
    GRACEFUL_TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    id: str
    op: PowerOp
    graceful_timeout_seconds: int
    def __init__(self, id: _Optional[str] = ..., op: _Optional[_Union[PowerOp, str]] = ..., graceful_timeout_seconds: _Optional[int] = ...) -> None: ...

class ReconfigureRequest(_message.Message):
    __slots__ = ("id", "desired_json")
    ID_FIELD_NUMBER: _ClassVar[int]
    DESIRED_JSON_FIELD_NUMBER: _ClassVar[int]
    id: str
    desired_json: str
    def __init__(self, id: _Optional[str] = ..., desired_json: _Optional[str] = ...) -> None: ...

class HardwareUpgradeRequest(_message.Message):
    __slots__ = ("id", "target_version")
    ID_FIELD_NUMBER: _ClassVar[int]
    TARGET_VERSION_FIELD_NUMBER: _ClassVar[int]
    id: str
    target_version: int
    def __init__(self, id: _Optional[str] = ..., target_version: _Optional[int] = ...) -> None: ...

class TaskResponse(_message.Message):
    __slots__ = ("task",)
    TASK_FIELD_NUMBER: _ClassVar[int]
    task: TaskRef
    def __init__(self, task: _Optional[_Union[TaskRef, _Mapping]] = ...) -> None: ...

class DescribeRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class DescribeResponse(_message.Message):
    __slots__ = ("exists", "power_state", "ips", "console_url", "provider_raw_json")
    EXISTS_FIELD_NUMBER: _ClassVar[int]
    POWER_STATE_FIELD_NUMBER: _ClassVar[int]
    IPS_FIELD_NUMBER: _ClassVar[int]
    CONSOLE_URL_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_RAW_JSON_FIELD_NUMBER: _ClassVar[int]
    exists: bool
    power_state: str
    ips: _containers.RepeatedScalarFieldContainer[str]
    console_url: str
    provider_raw_json: str
    def __init__(self, exists: _Optional[bool] = ..., power_state: _Optional[str] = ..., ips: _Optional[_Iterable[str]] = ..., console_url: _Optional[str] = ..., provider_raw_json: _Optional[str] = ...) -> None: ...

class TaskStatusRequest(_message.Message):
    __slots__ = ("task",)
    TASK_FIELD_NUMBER: _ClassVar[int]
    task: TaskRef
    def __init__(self, task: _Optional[_Union[TaskRef, _Mapping]] = ...) -> None: ...

class TaskStatusResponse(_message.Message):
    __slots__ = ("done", "error")
    DONE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    done: bool
    error: str
    def __init__(self, done: _Optional[bool] = ..., error: _Optional[str] = ...) -> None: ...

class SnapshotCreateRequest(_message.Message):
    __slots__ = ("vm_id", "name_hint", "include_memory", "description")
    VM_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_HINT_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_MEMORY_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    vm_id: str
    name_hint: str
    include_memory: bool
    description: str
    def __init__(self, vm_id: _Optional[str] = ..., name_hint: _Optional[str] = ..., include_memory: _Optional[bool] = ..., description: _Optional[str] = ...) -> None: ...

class SnapshotCreateResponse(_message.Message):
    __slots__ = ("snapshot_id", "task")
    SNAPSHOT_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    snapshot_id: str
    task: TaskRef
    def __init__(self, snapshot_id: _Optional[str] = ..., task: _Optional[_Union[TaskRef, _Mapping]] = ...) -> None: ...

class SnapshotDeleteRequest(_message.Message):
    __slots__ = ("vm_id", "snapshot_id")
    VM_ID_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_ID_FIELD_NUMBER: _ClassVar[int]
    vm_id: str
    snapshot_id: str
    def __init__(self, vm_id: _Optional[str] = ..., snapshot_id: _Optional[str] = ...) -> None: ...

class SnapshotRevertRequest(_message.Message):
    __slots__ = ("vm_id", "snapshot_id")
    VM_ID_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_ID_FIELD_NUMBER: _ClassVar[int]
    vm_id: str
    snapshot_id: str
    def __init__(self, vm_id: _Optional[str] = ..., snapshot_id: _Optional[str] = ...) -> None: ...

class CloneRequest(_message.Message):
    __slots__ = ("source_vm_id", "target_name", "linked", "class_json", "placement_json", "customize_json")
    SOURCE_VM_ID_FIELD_NUMBER: _ClassVar[int]
    TARGET_NAME_FIELD_NUMBER: _ClassVar[int]
    LINKED_FIELD_NUMBER: _ClassVar[int]
    CLASS_JSON_FIELD_NUMBER: _ClassVar[int]
    PLACEMENT_JSON_FIELD_NUMBER: _ClassVar[int]
    CUSTOMIZE_JSON_FIELD_NUMBER: _ClassVar[int]
    source_vm_id: str
    target_name: str
    linked: bool
    class_json: str
    placement_json: str
    customize_json: str
    def __init__(self, source_vm_id: _Optional[str] = ..., target_name: _Optional[str] = ..., linked: _Optional[bool] = ..., class_json: _Optional[str] = ..., placement_json: _Optional[str] = ..., customize_json: _Optional[str] = ...) -> None: ...

class CloneResponse(_message.Message):
    __slots__ = ("target_vm_id", "task")
    TARGET_VM_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    target_vm_id: str
    task: TaskRef
    def __init__(self, target_vm_id: _Optional[str] = ..., task: _Optional[_Union[TaskRef, _Mapping]] = ...) -> None: ...

class ImagePrepareRequest(_message.Message):
    __slots__ = ("image_json", "target_name", "storage_hint")
    IMAGE_JSON_FIELD_NUMBER: _ClassVar[int]
    TARGET_NAME_FIELD_NUMBER: _ClassVar[int]
    STORAGE_HINT_FIELD_NUMBER: _ClassVar[int]
    image_json: str
    target_name: str
    storage_hint: str
    def __init__(self, image_json: _Optional[str] = ..., target_name: _Optional[str] = ..., storage_hint: _Optional[str] = ...) -> None: ...

class ImagePrepareResponse(_message.Message):
    __slots__ = ("task", "prepared_image_id", "prepared_image_path")
    TASK_FIELD_NUMBER: _ClassVar[int]
    PREPARED_IMAGE_ID_FIELD_NUMBER: _ClassVar[int]
    PREPARED_IMAGE_PATH_FIELD_NUMBER: _ClassVar[int]
    task: TaskRef
    prepared_image_id: str
    prepared_image_path: str
    def __init__(self, task: _Optional[_Union[TaskRef, _Mapping]] = ..., prepared_image_id: _Optional[str] = ..., prepared_image_path: _Optional[str] = ...) -> None: ...

class ExportDiskRequest(_message.Message):
    __slots__ = ("vm_id", "disk_id", "snapshot_id", "destination_url", "format", "compress", "credentials", "backend_type", "transfer_mode", "storage_options_json")
    class CredentialsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    VM_ID_FIELD_NUMBER: _ClassVar[int]
    DISK_ID_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_ID_FIELD_NUMBER: _ClassVar[int]
    DESTINATION_URL_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    COMPRESS_FIELD_NUMBER: _ClassVar[int]
    CREDENTIALS_FIELD_NUMBER: _ClassVar[int]
    BACKEND_TYPE_FIELD_NUMBER: _ClassVar[int]
    TRANSFER_MODE_FIELD_NUMBER: _ClassVar[int]
    STORAGE_OPTIONS_JSON_FIELD_NUMBER: _ClassVar[int]
    vm_id: str
    disk_id: str
    snapshot_id: str
    destination_url: str
    format: str
    compress: bool
    credentials: _containers.ScalarMap[str, str]
    backend_type: str
    transfer_mode: str
    storage_options_json: str
    def __init__(self, vm_id: _Optional[str] = ..., disk_id: _Optional[str] = ..., snapshot_id: _Optional[str] = ..., destination_url: _Optional[str] = ..., format: _Optional[str] = ..., compress: _Optional[bool] = ..., credentials: _Optional[_Mapping[str, str]] = ..., backend_type: _Optional[str] = ..., transfer_mode: _Optional[str] = ..., storage_options_json: _Optional[str] = ...) -> None: ...

class ExportDiskResponse(_message.Message):
    __slots__ = ("export_id", "task", "estimated_size_bytes", "checksum")
    EXPORT_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    ESTIMATED_SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    CHECKSUM_FIELD_NUMBER: _ClassVar[int]
    export_id: str
    task: TaskRef
    estimated_size_bytes: int
    checksum: str
    def __init__(self, export_id: _Optional[str] = ..., task: _Optional[_Union[TaskRef, _Mapping]] = ..., estimated_size_bytes: _Optional[int] = ..., checksum: _Optional[str] = ...) -> None: ...

class ImportDiskRequest(_message.Message):
    __slots__ = ("source_url", "storage_hint", "format", "target_name", "verify_checksum", "expected_checksum", "credentials", "backend_type", "transfer_mode", "storage_options_json")
    class CredentialsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    SOURCE_URL_FIELD_NUMBER: _ClassVar[int]
    STORAGE_HINT_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    TARGET_NAME_FIELD_NUMBER: _ClassVar[int]
    VERIFY_CHECKSUM_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_CHECKSUM_FIELD_NUMBER: _ClassVar[int]
    CREDENTIALS_FIELD_NUMBER: _ClassVar[int]
    BACKEND_TYPE_FIELD_NUMBER: _ClassVar[int]
    TRANSFER_MODE_FIELD_NUMBER: _ClassVar[int]
    STORAGE_OPTIONS_JSON_FIELD_NUMBER: _ClassVar[int]
    source_url: str
    storage_hint: str
    format: str
    target_name: str
    verify_checksum: bool
    expected_checksum: str
    credentials: _containers.ScalarMap[str, str]
    backend_type: str
    transfer_mode: str
    storage_options_json: str
    def __init__(self, source_url: _Optional[str] = ..., storage_hint: _Optional[str] = ..., format: _Optional[str] = ..., target_name: _Optional[str] = ..., verify_checksum: _Optional[bool] = ..., expected_checksum: _Optional[str] = ..., credentials: _Optional[_Mapping[str, str]] = ..., backend_type: _Optional[str] = ..., transfer_mode: _Optional[str] = ..., storage_options_json: _Optional[str] = ...) -> None: ...

class ImportDiskResponse(_message.Message):
    __slots__ = ("disk_id", "path", "task", "actual_size_bytes", "checksum")
    DISK_ID_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    ACTUAL_SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    CHECKSUM_FIELD_NUMBER: _ClassVar[int]
    disk_id: str
    path: str
    task: TaskRef
    actual_size_bytes: int
    checksum: str
    def __init__(self, disk_id: _Optional[str] = ..., path: _Optional[str] = ..., task: _Optional[_Union[TaskRef, _Mapping]] = ..., actual_size_bytes: _Optional[int] = ..., checksum: _Optional[str] = ...) -> None: ...

class GetDiskInfoRequest(_message.Message):
    __slots__ = ("vm_id", "disk_id", "snapshot_id")
    VM_ID_FIELD_NUMBER: _ClassVar[int]
    DISK_ID_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_ID_FIELD_NUMBER: _ClassVar[int]
    vm_id: str
    disk_id: str
    snapshot_id: str
    def __init__(self, vm_id: _Optional[str] = ..., disk_id: _Optional[str] = ..., snapshot_id: _Optional[str] = ...) -> None: ...

class GetDiskInfoResponse(_message.Message):
    __slots__ = ("disk_id", "format", "virtual_size_bytes", "actual_size_bytes", "path", "is_bootable", "snapshots", "backing_file", "metadata")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    DISK_ID_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    VIRTUAL_SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    ACTUAL_SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    IS_BOOTABLE_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOTS_FIELD_NUMBER: _ClassVar[int]
    BACKING_FILE_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    disk_id: str
    format: str
    virtual_size_bytes: int
    actual_size_bytes: int
    path: str
    is_bootable: bool
    snapshots: _containers.RepeatedScalarFieldContainer[str]
    backing_file: str
    metadata: _containers.ScalarMap[str, str]
    def __init__(self, disk_id: _Optional[str] = ..., format: _Optional[str] = ..., virtual_size_bytes: _Optional[int] = ..., actual_size_bytes: _Optional[int] = ..., path: _Optional[str] = ..., is_bootable: _Optional[bool] = ..., snapshots: _Optional[_Iterable[str]] = ..., backing_file: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ...) -> None: ...

class ListVMsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListVMsResponse(_message.Message):
    __slots__ = ("vms",)
    VMS_FIELD_NUMBER: _ClassVar[int]
    vms: _containers.RepeatedCompositeFieldContainer[VMInfo]
    def __init__(self, vms: _Optional[_Iterable[_Union[VMInfo, _Mapping]]] = ...) -> None: ...

class VMInfo(_message.Message):
    __slots__ = ("id", "name", "power_state", "ips", "cpu", "memory_mib", "disks", "networks", "provider_raw")
    class ProviderRawEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    POWER_STATE_FIELD_NUMBER: _ClassVar[int]
    IPS_FIELD_NUMBER: _ClassVar[int]
    CPU_FIELD_NUMBER: _ClassVar[int]
    MEMORY_MIB_FIELD_NUMBER: _ClassVar[int]
    DISKS_FIELD_NUMBER: _ClassVar[int]
    NETWORKS_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_RAW_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    power_state: str
    ips: _containers.RepeatedScalarFieldContainer[str]
    cpu: int
    memory_mib: int
    disks: _containers.RepeatedCompositeFieldContainer[DiskInfo]
    networks: _containers.RepeatedCompositeFieldContainer[NetworkInfo]
    provider_raw: _containers.ScalarMap[str, str]
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., power_state: _Optional[str] = ..., ips: _Optional[_Iterable[str]] = ..., cpu: _Optional[int] = ..., memory_mib: _Optional[int] = ..., disks: _Optional[_Iterable[_Union[DiskInfo, _Mapping]]] = ..., networks: _Optional[_Iterable[_Union[NetworkInfo, _Mapping]]] = ..., provider_raw: _Optional[_Mapping[str, str]] = ...) -> None: ...

class DiskInfo(_message.Message):
    __slots__ = ("id", "path", "size_gib", "format")
    ID_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    SIZE_GIB_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    id: str
    path: str
    size_gib: int
    format: str
    def __init__(self, id: _Optional[str] = ..., path: _Optional[str] = ..., size_gib: _Optional[int] = ..., format: _Optional[str] = ...) -> None: ...

class NetworkInfo(_message.Message):
    __slots__ = ("name", "mac", "ip_address")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MAC_FIELD_NUMBER: _ClassVar[int]
    IP_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    name: str
    mac: str
    ip_address: str
    def __init__(self, name: _Optional[str] = ..., mac: _Optional[str] = ..., ip_address: _Optional[str] = ...) -> None: ...

class GetCapabilitiesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetCapabilitiesResponse(_message.Message):
    __slots__ = ("supports_reconfigure_online", "supports_disk_expansion_online", "supports_snapshots", "supports_memory_snapshots", "supports_linked_clones", "supports_image_import", "supported_disk_types", "supported_network_types", "supports_disk_export", "supports_disk_import", "supported_export_formats", "supported_import_formats", "supports_export_compression", "supported_export_backends", "supported_import_backends", "supported_transfer_modes")
    SUPPORTS_RECONFIGURE_ONLINE_FIELD_NUMBER: _ClassVar[int]
    SUPPORTS_DISK_EXPANSION_ONLINE_FIELD_NUMBER: _ClassVar[int]
    SUPPORTS_SNAPSHOTS_FIELD_NUMBER: _ClassVar[int]
    SUPPORTS_MEMORY_SNAPSHOTS_FIELD_NUMBER: _ClassVar[int]
    SUPPORTS_LINKED_CLONES_FIELD_NUMBER: _ClassVar[int]
    SUPPORTS_IMAGE_IMPORT_FIELD_NUMBER: _ClassVar[int]
    SUPPORTED_DISK_TYPES_FIELD_NUMBER: _ClassVar[int]
    SUPPORTED_NETWORK_TYPES_FIELD_NUMBER: _ClassVar[int]
    SUPPORTS_DISK_EXPORT_FIELD_NUMBER: _ClassVar[int]
    SUPPORTS_DISK_IMPORT_FIELD_NUMBER: _ClassVar[int]
    SUPPORTED_EXPORT_FORMATS_FIELD_NUMBER: _ClassVar[int]
    SUPPORTED_IMPORT_FORMATS_FIELD_NUMBER: _ClassVar[int]
    SUPPORTS_EXPORT_COMPRESSION_FIELD_NUMBER: _ClassVar[int]
    SUPPORTED_EXPORT_BACKENDS_FIELD_NUMBER: _ClassVar[int]
    SUPPORTED_IMPORT_BACKENDS_FIELD_NUMBER: _ClassVar[int]
    SUPPORTED_TRANSFER_MODES_FIELD_NUMBER: _ClassVar[int]
    supports_reconfigure_online: bool
    supports_disk_expansion_online: bool
    supports_snapshots: bool
    supports_memory_snapshots: bool
    supports_linked_clones: bool
    supports_image_import: bool
    supported_disk_types: _containers.RepeatedScalarFieldContainer[str]
    supported_network_types: _containers.RepeatedScalarFieldContainer[str]
    supports_disk_export: bool
    supports_disk_import: bool
    supported_export_formats: _containers.RepeatedScalarFieldContainer[str]
    supported_import_formats: _containers.RepeatedScalarFieldContainer[str]
    supports_export_compression: bool
    supported_export_backends: _containers.RepeatedScalarFieldContainer[str]
    supported_import_backends: _containers.RepeatedScalarFieldContainer[str]
    supported_transfer_modes: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, supports_reconfigure_online: _Optional[bool] = ..., supports_disk_expansion_online: _Optional[bool] = ..., supports_snapshots: _Optional[bool] = ..., supports_memory_snapshots: _Optional[bool] = ..., supports_linked_clones: _Optional[bool] = ..., supports_image_import: _Optional[bool] = ..., supported_disk_types: _Optional[_Iterable[str]] = ..., supported_network_types: _Optional[_Iterable[str]] = ..., supports_disk_export: _Optional[bool] = ..., supports_disk_import: _Optional[bool] = ..., supported_export_formats: _Optional[_Iterable[str]] = ..., supported_import_formats: _Optional[_Iterable[str]] = ..., supports_export_compression: _Optional[bool] = ..., supported_export_backends: _Optional[_Iterable[str]] = ..., supported_import_backends: _Optional[_Iterable[str]] = ..., supported_transfer_modes: _Optional[_Iterable[str]] = ...) -> None: ...
