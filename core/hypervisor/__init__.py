"""The one door to libvirt: nothing outside this package imports ``libvirt``.

Split by concern — ``connection`` (one per process, reconnect, error mapping, call
counting), ``xml`` (lxml only, disks parsed once), ``domains`` (VM calls),
``snapshots`` (snapshot calls and tree orders), ``clone`` (a clone's identity in
XML) — and gathered here, so callers write ``hypervisor.get_vm(...)``. Every
function returns plain data classes: callers never hold libvirt objects.
"""

from core.errors import AppError as HypervisorError
from core.errors import Conflict, ConnectionLost, Failed, Invalid, NotFound, Unavailable
from core.hypervisor.clone import CloneIdentity, clone_domain_xml, clone_snapshot_xml, new_mac, snapshot_domain_files
from core.hypervisor.connection import close, count_calls, version
from core.hypervisor.domains import (
    STATE_WORDS,
    FileUse,
    VMInfo,
    define_vm,
    domain_xml,
    files_in_use,
    get_vm,
    list_vms,
    power,
    undefine_vm,
    vm_exists,
    vm_state,
)
from core.hypervisor.snapshots import (
    SnapshotInfo,
    create_snapshot,
    creation_order,
    delete_snapshot,
    get_snapshot,
    get_snapshots,
    leaves_first,
    parents_first,
    redefine_snapshot,
    revert_snapshot,
    snapshot_names,
    snapshot_xml,
    snapshots_with_xml,
)
from core.hypervisor.xml import Disk, disks_of, nvram_path, parse_xml, referenced_files, to_xml

__all__ = [
    "STATE_WORDS",
    "CloneIdentity",
    "Conflict",
    "ConnectionLost",
    "Disk",
    "Failed",
    "FileUse",
    "HypervisorError",
    "Invalid",
    "NotFound",
    "SnapshotInfo",
    "Unavailable",
    "VMInfo",
    "clone_domain_xml",
    "clone_snapshot_xml",
    "close",
    "count_calls",
    "create_snapshot",
    "creation_order",
    "define_vm",
    "delete_snapshot",
    "disks_of",
    "domain_xml",
    "files_in_use",
    "get_snapshot",
    "get_snapshots",
    "get_vm",
    "leaves_first",
    "list_vms",
    "new_mac",
    "nvram_path",
    "parents_first",
    "parse_xml",
    "power",
    "redefine_snapshot",
    "referenced_files",
    "revert_snapshot",
    "snapshot_domain_files",
    "snapshot_names",
    "snapshot_xml",
    "snapshots_with_xml",
    "to_xml",
    "undefine_vm",
    "version",
    "vm_exists",
    "vm_state",
]
