"""VMs in libvirt: look them up, list them, define, undefine, power them.

Only calls that never wait for a VM's job lock: a VM busy saving a snapshot must
not stall a page (``domstats`` and ``jobinfo`` would; ``state``, ``controlInfo``,
``XMLDesc`` and snapshot listings do not).
"""

from __future__ import annotations

import uuid as uuidlib
from dataclasses import dataclass

import libvirt

from core.errors import NotFound
from core.hypervisor.connection import call, is_missing
from core.hypervisor.xml import Disk, parse_disks, parse_xml, referenced_files, text, to_mib, to_xml

# libvirt's snapshot XML words for domain states.
STATE_WORDS = {
    libvirt.VIR_DOMAIN_NOSTATE: "nostate",
    libvirt.VIR_DOMAIN_RUNNING: "running",
    libvirt.VIR_DOMAIN_BLOCKED: "blocked",
    libvirt.VIR_DOMAIN_PAUSED: "paused",
    libvirt.VIR_DOMAIN_SHUTDOWN: "shutdown",
    libvirt.VIR_DOMAIN_SHUTOFF: "shutoff",
    libvirt.VIR_DOMAIN_CRASHED: "crashed",
    libvirt.VIR_DOMAIN_PMSUSPENDED: "pmsuspended",
}

_SNAPSHOT_PAUSE_REASONS = (
    libvirt.VIR_DOMAIN_PAUSED_SNAPSHOT,
    libvirt.VIR_DOMAIN_PAUSED_SAVE,
    libvirt.VIR_DOMAIN_PAUSED_STARTING_UP,
    libvirt.VIR_DOMAIN_PAUSED_FROM_SNAPSHOT,
)
_PAUSE_WORDS = {
    libvirt.VIR_DOMAIN_PAUSED_USER: "user",
    libvirt.VIR_DOMAIN_PAUSED_SAVE: "saving",
    libvirt.VIR_DOMAIN_PAUSED_SNAPSHOT: "snapshot",
    libvirt.VIR_DOMAIN_PAUSED_STARTING_UP: "starting up",
    libvirt.VIR_DOMAIN_PAUSED_FROM_SNAPSHOT: "from snapshot",
}


@dataclass(frozen=True)
class VMInfo:
    """A VM as libvirt shows it now.

    ``snapshot_count``, ``current_snapshot`` and ``persistent`` are None when the
    lookup was asked not to read them (``get_vm(ref, snapshots=False)``).
    """

    name: str
    uuid: str
    state: str
    vcpus: int
    memory_mib: int
    disks: tuple[Disk, ...]
    snapshot_count: int | None = None
    current_snapshot: str | None = None  # libvirt name, "" when none
    pflash: bool = False
    persistent: bool | None = None
    state_reason: int = 0
    job_running: bool = False  # asked only when paused for a snapshot (see busy_with_snapshot)

    @property
    def is_active(self) -> bool:
        return self.state not in ("shutoff", "crashed")

    @property
    def state_reason_text(self) -> str:
        """Why a paused VM is paused, in virsh's words for the reasons the app acts on."""
        if self.state != "paused":
            return ""
        return _PAUSE_WORDS.get(self.state_reason, "other")

    @property
    def busy_with_snapshot(self) -> bool:
        """QEMU is writing or loading an internal snapshot right now (guest paused for it).

        libvirt 9.0 shows "paused (saving)" during savevm and "paused (starting up)"
        while a revert loads memory. That reason outlives a libvirtd crash, so only a
        job seen on the VM's control interface makes it true.
        """
        return self.state == "paused" and self.state_reason in _SNAPSHOT_PAUSE_REASONS and self.job_running


def current_name(dom: libvirt.virDomain) -> str:
    """The current snapshot's libvirt name, or "" when there is none."""
    try:
        return dom.snapshotCurrent().getName()
    except libvirt.libvirtError as exc:
        if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN_SNAPSHOT:
            raise
        return ""


def _vm_info(dom: libvirt.virDomain, *, snapshots: bool = True) -> VMInfo:
    state, reason = dom.state()
    # controlInfo does not wait for the job lock: safe while QEMU is saving.
    job_running = (
        state == libvirt.VIR_DOMAIN_PAUSED
        and reason in _SNAPSHOT_PAUSE_REASONS
        and dom.controlInfo()[0] != libvirt.VIR_DOMAIN_CONTROL_OK
    )
    root = parse_xml(dom.XMLDesc(0))
    memory = root.find("memory")
    memory_mib = to_mib(int(text(root, "memory", "0")), memory.get("unit", "KiB") if memory is not None else "KiB")
    loader = root.find("os/loader")
    pflash = (loader is not None and loader.get("type") == "pflash") or root.find("os").get("firmware") == "efi"
    return VMInfo(
        name=dom.name(),
        uuid=dom.UUIDString(),
        state=STATE_WORDS.get(state, "nostate"),
        state_reason=reason,
        job_running=job_running,
        vcpus=int(text(root, "vcpu", "1")),
        memory_mib=memory_mib,
        disks=parse_disks(root),
        snapshot_count=dom.snapshotNum(0) if snapshots else None,
        current_snapshot=current_name(dom) if snapshots else None,
        pflash=bool(pflash),
        persistent=bool(dom.isPersistent()) if snapshots else None,
    )


def domain(conn: libvirt.virConnect, ref: str) -> libvirt.virDomain:
    """Look a domain up by UUID (preferred, stable) or by name."""
    if "\x00" in ref:
        # No name holds one, and the binding would raise ValueError instead of asking.
        raise NotFound(f"There is no VM named {ref!r}.")
    try:
        uuidlib.UUID(ref)
    except ValueError:
        return conn.lookupByName(ref)
    return conn.lookupByUUIDString(ref)


def list_vms() -> list[VMInfo]:
    """Every defined VM, with a fixed number of libvirt calls per VM."""

    def run(conn):
        vms = []
        for dom in conn.listAllDomains(0):
            try:
                vms.append(_vm_info(dom))
            except libvirt.libvirtError as exc:
                if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                    raise  # else: undefined between the listing and the look
        return sorted(vms, key=lambda vm: vm.name)

    return call(run)


def get_vm(ref: str, *, snapshots: bool = True) -> VMInfo:
    """The VM by UUID or name; ``snapshots=False`` skips its snapshot count, current
    snapshot and persistence (three calls fewer, for requests that do not need them)."""
    return call(lambda conn: _vm_info(domain(conn, ref), snapshots=snapshots))


def vm_state(ref: str) -> str:
    return call(lambda conn: STATE_WORDS.get(domain(conn, ref).state()[0], "nostate"))


def domain_xml(ref: str, *, inactive: bool = True) -> str:
    flags = libvirt.VIR_DOMAIN_XML_INACTIVE if inactive else 0
    return call(lambda conn: domain(conn, ref).XMLDesc(flags | libvirt.VIR_DOMAIN_XML_SECURE))


def define_vm(xml: str) -> VMInfo:
    return call(lambda conn: _vm_info(conn.defineXML(xml)), changes="defining a VM")


def undefine_vm(ref: str) -> None:
    """Undefine a shut-off VM, its NVRAM and any left-over snapshot metadata.

    Callers delete the snapshots first: the metadata flag does not remove the
    snapshot data kept inside qcow2 files.
    """
    flags = (
        libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
        | libvirt.VIR_DOMAIN_UNDEFINE_NVRAM
        | libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
        | libvirt.VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA
    )
    call(lambda conn: domain(conn, ref).undefineFlags(flags), changes="undefining the VM")


def vm_exists(ref: str) -> bool:
    try:
        call(lambda conn: domain(conn, ref))
    except NotFound:
        return False
    return True


# The libvirt call behind each power action (vms.power says when each makes sense).
_POWER_CALLS = {
    "start": "create",
    "shutdown": "shutdown",
    "poweroff": "destroy",
    "reboot": "reboot",
    "suspend": "suspend",
    "resume": "resume",
}


def power(ref: str, action: str) -> None:
    method = _POWER_CALLS[action]
    call(lambda conn: getattr(domain(conn, ref), method)(), changes=f"asking for {action}")


@dataclass
class FileUse:
    """Who uses a disk file, and in which format their definitions say it is."""

    vms: list[str]
    format: str = ""


def files_in_use(*, exclude: str = "") -> dict[str, FileUse]:
    """{file path: its users and format} over every defined VM except ``exclude`` (a UUID).

    Reads both the persistent and the live definition (a running VM may use other
    files), and every snapshot's definition: reverting a snapshot brings its disks back.
    """

    def run(conn):
        users: dict[str, FileUse] = {}
        for dom in conn.listAllDomains(0):
            try:
                if dom.UUIDString() == exclude:
                    continue
                xmls = [dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)]
                if dom.isActive():
                    xmls.append(dom.XMLDesc(0))
                for snap in dom.listAllSnapshots(0):
                    root = parse_xml(snap.getXMLDesc(0))
                    xmls.extend(to_xml(el) for el in (root.find("domain"), root.find("inactiveDomain")) if el is not None)
            except libvirt.libvirtError as exc:
                if is_missing(exc):
                    continue  # vanished while we looked
                raise
            for xml in xmls:
                for path, fmt in referenced_files(xml).items():
                    use = users.setdefault(path, FileUse(vms=[]))
                    use.format = use.format or fmt
                    if dom.name() not in use.vms:
                        use.vms.append(dom.name())
        return users

    return call(run)
