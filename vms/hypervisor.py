"""The one door to libvirt.

Nothing else in the project imports ``libvirt``. This module

- opens one connection per process, lazily, keyed by ``os.getpid()`` (django-q2
  forks its workers and a libvirt connection must never cross a fork), and
  reconnects once when the connection turns out to be broken;
- maps ``libvirtError`` to the project's exceptions below;
- builds and parses every XML document with lxml (a parser that neither resolves
  entities nor touches the network), never with string formatting;
- returns plain data classes, so callers never hold libvirt objects.
"""

from __future__ import annotations

import contextlib
import os
import threading
import uuid as uuidlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

import libvirt
from django.conf import settings
from lxml import etree

from vms.errors import AppError, Conflict, ConnectionLost, Failed, Invalid, NotFound, Unavailable

T = TypeVar("T")

# ---------------------------------------------------------------------------
# Errors


HypervisorError = AppError


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

_NOT_FOUND = {
    libvirt.VIR_ERR_NO_DOMAIN,
    libvirt.VIR_ERR_NO_DOMAIN_SNAPSHOT,
    libvirt.VIR_ERR_NO_STORAGE_VOL,
    libvirt.VIR_ERR_NO_STORAGE_POOL,
}
_INVALID = {
    libvirt.VIR_ERR_OPERATION_INVALID,
    libvirt.VIR_ERR_OPERATION_UNSUPPORTED,
    libvirt.VIR_ERR_CONFIG_UNSUPPORTED,
    libvirt.VIR_ERR_XML_ERROR,
    libvirt.VIR_ERR_XML_DETAIL,
    libvirt.VIR_ERR_INVALID_ARG,
    libvirt.VIR_ERR_NO_SUPPORT,
}
_CONFLICT = {libvirt.VIR_ERR_OPERATION_TIMEOUT, libvirt.VIR_ERR_DOM_EXIST}
_BROKEN = {libvirt.VIR_ERR_SYSTEM_ERROR, libvirt.VIR_ERR_RPC, libvirt.VIR_ERR_INVALID_CONN, libvirt.VIR_ERR_NO_CONNECT}


def _map_error(exc: libvirt.libvirtError) -> HypervisorError:
    code = exc.get_error_code()
    message = exc.get_error_message() or str(exc)
    if code in _NOT_FOUND:
        return NotFound(message)
    if code in _INVALID:
        return Invalid(message)
    if code in _CONFLICT or "cannot acquire state change lock" in message:
        return Conflict(message)
    if code in _BROKEN:
        return Unavailable(f"libvirtd is unreachable: {message}")
    return Failed(message)


# Silence libvirt's default handler, which prints every error to stderr; errors
# reach us as exceptions anyway.
libvirt.registerErrorHandler(lambda _ctx, _err: None, None)

# ---------------------------------------------------------------------------
# Connection

_lock = threading.Lock()
_conn: libvirt.virConnect | None = None
_conn_pid: int | None = None


def _open() -> libvirt.virConnect:
    global _conn, _conn_pid
    with _lock:
        if _conn is None or _conn_pid != os.getpid():
            # After a fork the parent's connection object is not ours: drop it
            # without closing (closing would talk on the parent's socket).
            try:
                _conn = libvirt.open(settings.LIBVIRT_URI)
            except libvirt.libvirtError as exc:
                _conn = None
                raise Unavailable(
                    f"Cannot connect to libvirt at {settings.LIBVIRT_URI}: "
                    f"{exc.get_error_message()}. Is libvirtd running (scripts/hypervisor)?"
                ) from exc
            _conn_pid = os.getpid()
        return _conn


def _reset() -> None:
    global _conn
    with _lock:
        if _conn is not None and _conn_pid == os.getpid():
            with contextlib.suppress(libvirt.libvirtError):
                _conn.close()
        _conn = None


def _is_broken(exc: libvirt.libvirtError) -> bool:
    if exc.get_error_code() in _BROKEN:
        return True
    with contextlib.suppress(Exception):
        return _conn is not None and _conn.isAlive() == 0
    return True


def _call(fn: Callable[[libvirt.virConnect], T], *, changes: str = "") -> T:
    """Run ``fn(conn)``; reconnect once if the connection broke; map errors.

    A call that ``changes`` something is not repeated on a new connection: it may
    have happened before the connection broke (libvirtd crashed mid-call), and
    doing it twice is worse than saying so. ConnectionLost tells the caller to
    look at what libvirt shows now.
    """
    conn = _open()
    try:
        return fn(conn)
    except libvirt.libvirtError as exc:
        if not _is_broken(exc):
            raise _map_error(exc) from exc
        _reset()
        if changes:
            raise ConnectionLost(
                f"The connection to libvirtd broke while {changes} ({exc.get_error_message()}): it may or may not have happened."
            ) from exc
    conn = _open()
    try:
        return fn(conn)
    except libvirt.libvirtError as exc:
        raise _map_error(exc) from exc


def close() -> None:
    """Drop this process's connection (tests, and after libvirtd restarts)."""
    _reset()


@contextlib.contextmanager
def count_calls() -> Iterator[Counter]:
    """Count libvirt API calls made inside the block (tests and benchmarks).

    Methods on the connection, domain and snapshot classes are wrapped while the
    block runs; names like ``virDomain.XMLDesc`` are the keys. ``name()`` and
    ``UUIDString()`` are local and not counted.
    """
    counter: Counter = Counter()
    local = {"name", "UUIDString", "getName", "getDomain", "getConnect", "connect", "domain"}
    patched = []
    for cls in (libvirt.virConnect, libvirt.virDomain, libvirt.virDomainSnapshot):
        for attr, value in list(vars(cls).items()):
            if attr.startswith("_") or attr in local or not callable(value):
                continue

            def wrapper(*args, __value=value, __key=f"{cls.__name__}.{attr}", **kwargs):
                counter[__key] += 1
                return __value(*args, **kwargs)

            patched.append((cls, attr, value))
            setattr(cls, attr, wrapper)
    try:
        yield counter
    finally:
        for cls, attr, value in patched:
            setattr(cls, attr, value)


# ---------------------------------------------------------------------------
# XML

_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, remove_blank_text=True)


def parse_xml(text: str | bytes) -> etree._Element:
    if isinstance(text, str):
        text = text.encode()
    return etree.fromstring(text, _PARSER)


def to_xml(element: etree._Element) -> str:
    return etree.tostring(element, encoding="unicode")


# ---------------------------------------------------------------------------
# Data


@dataclass(frozen=True)
class Disk:
    target: str
    device: str  # disk, cdrom, floppy, lun
    format: str  # qcow2, raw, ... ("" when unknown)
    source: str  # file path or volume/network description
    readonly: bool

    @property
    def needs_qcow2(self) -> bool:
        return self.device in ("disk", "lun") and not self.readonly


@dataclass(frozen=True)
class VMInfo:
    name: str
    uuid: str
    state: str
    vcpus: int
    memory_mib: int
    disks: tuple[Disk, ...]
    snapshot_count: int
    current_snapshot: str  # libvirt name, "" when none
    pflash: bool = False
    persistent: bool = True
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
        return {
            libvirt.VIR_DOMAIN_PAUSED_USER: "user",
            libvirt.VIR_DOMAIN_PAUSED_SAVE: "saving",
            libvirt.VIR_DOMAIN_PAUSED_SNAPSHOT: "snapshot",
            libvirt.VIR_DOMAIN_PAUSED_STARTING_UP: "starting up",
            libvirt.VIR_DOMAIN_PAUSED_FROM_SNAPSHOT: "from snapshot",
        }.get(self.state_reason, "other")

    @property
    def busy_with_snapshot(self) -> bool:
        """QEMU is writing or loading an internal snapshot right now (guest paused for it).

        libvirt 9.0 shows "paused (saving)" during savevm and "paused (starting up)"
        while a revert loads memory. That reason outlives a libvirtd crash, so only a
        job seen on the VM's control interface makes it true.
        """
        return self.state == "paused" and self.state_reason in _SNAPSHOT_PAUSE_REASONS and self.job_running


@dataclass(frozen=True)
class SnapshotInfo:
    name: str  # libvirt's (immutable) name
    description: str
    state: str
    created: int
    parent: str  # libvirt name of the parent, "" for a root
    memory: bool = False
    xml: str = field(default="", repr=False, compare=False)


def _text(element: etree._Element, path: str, default: str = "") -> str:
    found = element.find(path)
    return found.text or default if found is not None and found.text is not None else default


def _parse_disks(root: etree._Element) -> tuple[Disk, ...]:
    disks = []
    for disk in root.iterfind("devices/disk"):
        source_el = disk.find("source")
        source = ""
        if source_el is not None:
            source = (
                source_el.get("file")
                or source_el.get("dev")
                or source_el.get("name")
                or (f"{source_el.get('pool')}/{source_el.get('volume')}" if source_el.get("volume") else "")
            )
        driver = disk.find("driver")
        disks.append(
            Disk(
                target=disk.find("target").get("dev", "") if disk.find("target") is not None else "",
                device=disk.get("device", "disk"),
                format=(driver.get("type", "") if driver is not None else ""),
                source=source,
                readonly=disk.find("readonly") is not None,
            )
        )
    return tuple(disks)


_SNAPSHOT_PAUSE_REASONS = (
    libvirt.VIR_DOMAIN_PAUSED_SNAPSHOT,
    libvirt.VIR_DOMAIN_PAUSED_SAVE,
    libvirt.VIR_DOMAIN_PAUSED_STARTING_UP,
    libvirt.VIR_DOMAIN_PAUSED_FROM_SNAPSHOT,
)


def _current_name(dom: libvirt.virDomain) -> str:
    """The current snapshot's libvirt name, or "" when there is none."""
    try:
        return dom.snapshotCurrent().getName()
    except libvirt.libvirtError as exc:
        if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN_SNAPSHOT:
            raise
        return ""


def _vm_info(dom: libvirt.virDomain, *, xml: str | None = None) -> VMInfo:
    state, reason = dom.state()
    # controlInfo does not wait for the job lock: safe while QEMU is saving.
    job_running = (
        state == libvirt.VIR_DOMAIN_PAUSED
        and reason in _SNAPSHOT_PAUSE_REASONS
        and dom.controlInfo()[0] != libvirt.VIR_DOMAIN_CONTROL_OK
    )
    root = parse_xml(xml or dom.XMLDesc(0))
    memory_kib = int(_text(root, "memory", "0"))
    unit = root.find("memory").get("unit", "KiB") if root.find("memory") is not None else "KiB"
    memory_mib = _to_mib(memory_kib, unit)
    current = _current_name(dom)
    loader = root.find("os/loader")
    pflash = (loader is not None and loader.get("type") == "pflash") or root.find("os").get("firmware") == "efi"
    return VMInfo(
        name=dom.name(),
        uuid=dom.UUIDString(),
        state=STATE_WORDS.get(state, "nostate"),
        state_reason=reason,
        job_running=job_running,
        vcpus=int(_text(root, "vcpu", "1")),
        memory_mib=memory_mib,
        disks=_parse_disks(root),
        snapshot_count=dom.snapshotNum(0),
        current_snapshot=current,
        pflash=bool(pflash),
        persistent=bool(dom.isPersistent()),
    )


def _to_mib(value: int, unit: str) -> int:
    factors = {"b": 1 / 2**20, "bytes": 1 / 2**20, "kib": 1 / 1024, "k": 1 / 1024, "mib": 1, "m": 1, "gib": 1024, "g": 1024}
    return int(value * factors.get(unit.lower(), 1 / 1024))


def _domain(conn: libvirt.virConnect, ref: str) -> libvirt.virDomain:
    """Look a domain up by UUID (preferred, stable) or by name."""
    if "\x00" in ref:
        # No name holds one, and the binding would raise ValueError instead of asking.
        raise NotFound(f"There is no VM named {ref!r}.")
    try:
        uuidlib.UUID(ref)
    except ValueError:
        return conn.lookupByName(ref)
    return conn.lookupByUUIDString(ref)


def _snapshot_info(snap: libvirt.virDomainSnapshot, flags: int = 0) -> SnapshotInfo:
    xml = snap.getXMLDesc(flags)
    root = parse_xml(xml)
    memory = root.find("memory")
    return SnapshotInfo(
        name=_text(root, "name"),
        description=_text(root, "description"),
        state=_text(root, "state", "nostate"),
        created=int(_text(root, "creationTime", "0")),
        parent=_text(root, "parent/name"),
        memory=memory is not None and memory.get("snapshot") == "internal",
        xml=xml,
    )


# ---------------------------------------------------------------------------
# VMs


def version() -> str:
    def run(conn):
        v = conn.getLibVersion()
        return f"libvirt {v // 1000000}.{v // 1000 % 1000}.{v % 1000}"

    return _call(run)


def list_vms() -> list[VMInfo]:
    """Every defined VM, with a fixed number of libvirt calls per VM.

    Avoids the calls that wait for a VM's job lock (domstats, jobinfo): a VM busy
    saving a snapshot must not stall the inventory.
    """

    def run(conn):
        vms = []
        for dom in conn.listAllDomains(0):
            try:
                vms.append(_vm_info(dom))
            except libvirt.libvirtError as exc:
                # Undefined between the listing and the look: skip it.
                if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                    raise
        return sorted(vms, key=lambda vm: vm.name)

    return _call(run)


def get_vm(ref: str) -> VMInfo:
    return _call(lambda conn: _vm_info(_domain(conn, ref)))


def vm_state(ref: str) -> str:
    return _call(lambda conn: STATE_WORDS.get(_domain(conn, ref).state()[0], "nostate"))


def domain_xml(ref: str, *, inactive: bool = True) -> str:
    flags = libvirt.VIR_DOMAIN_XML_INACTIVE if inactive else 0
    return _call(lambda conn: _domain(conn, ref).XMLDesc(flags | libvirt.VIR_DOMAIN_XML_SECURE))


def define_vm(xml: str) -> VMInfo:
    return _call(lambda conn: _vm_info(conn.defineXML(xml)), changes="defining a VM")


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
    _call(lambda conn: _domain(conn, ref).undefineFlags(flags), changes="undefining the VM")


def vm_exists(ref: str) -> bool:
    try:
        _call(lambda conn: _domain(conn, ref))
    except NotFound:
        return False
    return True


POWER_ACTIONS = ("start", "shutdown", "poweroff", "reboot", "suspend", "resume")


def power(ref: str, action: str) -> None:
    def run(conn):
        dom = _domain(conn, ref)
        {
            "start": dom.create,
            "shutdown": dom.shutdown,
            "poweroff": dom.destroy,
            "reboot": dom.reboot,
            "suspend": dom.suspend,
            "resume": dom.resume,
        }[action]()

    _call(run, changes=f"asking for {action}")


# ---------------------------------------------------------------------------
# Snapshots


def snapshot_names(ref: str) -> tuple[list[str], str]:
    """(every snapshot's libvirt name, the current one or "") in two calls."""

    def run(conn):
        dom = _domain(conn, ref)
        names = [snap.getName() for snap in dom.listAllSnapshots(0)]
        current = _current_name(dom)
        return names, current

    return _call(run)


def get_snapshot(ref: str, name: str) -> SnapshotInfo:
    return _call(lambda conn: _snapshot_info(_domain(conn, ref).snapshotLookupByName(name)))


def get_snapshots(ref: str, names: list[str]) -> list[SnapshotInfo]:
    """Details of the given snapshots (one XML read each); vanished ones are skipped."""

    def run(conn):
        dom = _domain(conn, ref)
        found = []
        for name in names:
            try:
                found.append(_snapshot_info(dom.snapshotLookupByName(name)))
            except libvirt.libvirtError as exc:
                if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN_SNAPSHOT:
                    raise
        return found

    return _call(run)


def snapshot_xml(ref: str, name: str) -> str:
    return _call(lambda conn: _domain(conn, ref).snapshotLookupByName(name).getXMLDesc(libvirt.VIR_DOMAIN_XML_SECURE))


def create_snapshot(ref: str, name: str, description: str = "") -> SnapshotInfo:
    """Take an internal snapshot: memory and disks of a running VM, disks of a shut-off one."""
    root = etree.Element("domainsnapshot")
    etree.SubElement(root, "name").text = name
    if description:
        etree.SubElement(root, "description").text = description

    def run(conn):
        dom = _domain(conn, ref)
        snap = dom.snapshotCreateXML(to_xml(root), 0)
        return _snapshot_info(snap)

    return _call(run, changes=f"taking snapshot {name}")


def revert_snapshot(ref: str, name: str) -> None:
    def run(conn):
        dom = _domain(conn, ref)
        dom.revertToSnapshot(dom.snapshotLookupByName(name), 0)

    _call(run, changes=f"reverting to snapshot {name}")


def delete_snapshot(ref: str, name: str) -> None:
    """Delete one snapshot; its children move under its parent.

    Never VIR_DOMAIN_SNAPSHOT_DELETE_CHILDREN: on libvirt 9.0 it crashes libvirtd.
    """
    _call(lambda conn: _domain(conn, ref).snapshotLookupByName(name).delete(0), changes=f"deleting snapshot {name}")


def redefine_snapshot(ref: str, xml: str, *, current: bool = False) -> None:
    """Re-create a snapshot's metadata (its data already sits in the qcow2 disks)."""
    flags = libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_REDEFINE
    if current:
        flags |= libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_CURRENT
    _call(lambda conn: _domain(conn, ref).snapshotCreateXML(xml, flags), changes="redefining a snapshot")


# ---------------------------------------------------------------------------
# What the app refuses up front


def snapshot_blockers(vm: VMInfo) -> list[str]:
    """Reasons why libvirt 9.0 cannot take (and revert) an internal snapshot of ``vm``."""
    reasons = []
    if vm.pflash:
        reasons.append("This VM boots with UEFI firmware (pflash): libvirt 9.0 cannot take internal snapshots of it.")
    for disk in vm.disks:
        if disk.needs_qcow2 and disk.format != "qcow2":
            reasons.append(
                f"Disk {disk.target} ({disk.source or 'no source'}) is in {disk.format or 'an unknown'} "
                "format; internal snapshots need every writable disk in qcow2 format. "
                "Convert it with qemu-img convert -O qcow2, or make it read-only."
            )
    return reasons


# ---------------------------------------------------------------------------
# VM lifecycle: delete and clone (vms/lifecycle.py orchestrates; XML stays here)

# libvirt's own prefix for QEMU/KVM guests' MAC addresses.
MAC_PREFIX = (0x52, 0x54, 0x00)


@dataclass(frozen=True)
class DiskFile:
    """A disk as the clone and delete code needs it: what it is and where it lives."""

    target: str
    device: str  # disk, cdrom, floppy, lun
    type: str  # file, block, network, volume, dir
    format: str
    path: str  # the file for type="file", else ""
    readonly: bool
    shareable: bool

    @property
    def writable(self) -> bool:
        return self.device in ("disk", "lun") and not self.readonly and not self.shareable


def disk_files(xml: str) -> list[DiskFile]:
    """The disks of a domain XML, with their type (file, block, network...)."""
    root = parse_xml(xml)
    found = []
    for disk in root.iterfind("devices/disk"):
        source = disk.find("source")
        target = disk.find("target")
        driver = disk.find("driver")
        kind = disk.get("type", "file")
        found.append(
            DiskFile(
                target=target.get("dev", "") if target is not None else "",
                device=disk.get("device", "disk"),
                type=kind,
                format=driver.get("type", "") if driver is not None else "",
                path=(source.get("file") or "") if source is not None and kind == "file" else "",
                readonly=disk.find("readonly") is not None,
                shareable=disk.find("shareable") is not None,
            )
        )
    return found


def nvram_path(xml: str) -> str:
    """The UEFI variable store file of a domain XML, or ""."""
    nvram = parse_xml(xml).find("os/nvram")
    return (nvram.text or "").strip() if nvram is not None else ""


def referenced_files(xml: str) -> set[str]:
    """Every file a domain XML names as a disk source, backing store included."""
    root = parse_xml(xml)
    return {source.get("file") for source in root.iterfind(".//devices/disk//source") if source.get("file")}


def files_in_use(*, exclude: str = "") -> dict[str, list[str]]:
    """{file path: names of the VMs using it} over every defined VM except ``exclude`` (a UUID).

    Reads both the persistent and the live definition (a running VM may use other
    files), and every snapshot's definition: reverting a snapshot brings its disks back.
    """

    def run(conn):
        users: dict[str, list[str]] = {}
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
                if exc.get_error_code() in (libvirt.VIR_ERR_NO_DOMAIN, libvirt.VIR_ERR_NO_DOMAIN_SNAPSHOT):
                    continue  # vanished while we looked
                raise
            for xml in xmls:
                for path in referenced_files(xml):
                    names = users.setdefault(path, [])
                    if dom.name() not in names:
                        names.append(dom.name())
        return users

    return _call(run)


def new_mac() -> str:
    return ":".join(f"{b:02x}" for b in (*MAC_PREFIX, *os.urandom(3)))


@dataclass
class CloneIdentity:
    """What makes a clone a different machine: name, UUID, MACs, disk and NVRAM files.

    ``paths`` maps each source file to the clone's copy; ``macs`` fills up with a new
    address for each source address met, so a NIC keeps one address across the
    clone's definition and all its snapshots.
    """

    name: str
    uuid: str
    paths: dict[str, str]
    macs: dict[str, str] = field(default_factory=dict)

    def mac_for(self, mac: str) -> str:
        key = mac.lower()
        if key not in self.macs:
            taken = set(self.macs.values())
            new = new_mac()
            while new in taken or new == key:
                new = new_mac()
            self.macs[key] = new
        return self.macs[key]


def _rewrite_domain(domain: etree._Element, identity: CloneIdentity) -> None:
    """Give one <domain> element (a definition or a snapshot's copy) the clone's identity."""
    name = domain.find("name")
    if name is None:
        name = etree.SubElement(domain, "name")
    name.text = identity.name
    uuid_el = domain.find("uuid")
    if uuid_el is None:
        uuid_el = etree.SubElement(domain, "uuid")
    uuid_el.text = identity.uuid
    # SMBIOS system UUID must match the domain's, or libvirt refuses the definition.
    for entry in domain.iterfind("sysinfo/system/entry"):
        if entry.get("name") == "uuid":
            entry.text = identity.uuid
    for mac in domain.iterfind("devices/interface/mac"):
        if mac.get("address"):
            mac.set("address", identity.mac_for(mac.get("address")))
    for source in domain.iterfind("devices/disk//source"):
        path = source.get("file")
        if path in identity.paths:
            source.set("file", identity.paths[path])
    nvram = domain.find("os/nvram")
    if nvram is not None and (nvram.text or "").strip():
        path = nvram.text.strip()
        if path in identity.paths:
            nvram.text = identity.paths[path]
        else:
            # No copy was made (the file did not exist yet): libvirt makes a fresh one.
            nvram.text = None
    # Runtime-only identity of a live definition: libvirt regenerates it.
    for element in domain.iterfind("seclabel"):
        if element.get("type") == "dynamic":
            for child in element.iterfind("label"):
                element.remove(child)
            for child in element.iterfind("imagelabel"):
                element.remove(child)


def clone_domain_xml(xml: str, identity: CloneIdentity) -> str:
    root = parse_xml(xml)
    _rewrite_domain(root, identity)
    return to_xml(root)


def clone_snapshot_xml(xml: str, identity: CloneIdentity) -> str:
    """A snapshot's XML for the clone: its saved definitions rewritten, the rest kept."""
    root = parse_xml(xml)
    for tag in ("domain", "inactiveDomain"):
        domain = root.find(tag)
        if domain is not None:
            _rewrite_domain(domain, identity)
    for source in root.iterfind("disks/disk/source"):
        path = source.get("file")
        if path in identity.paths:
            source.set("file", identity.paths[path])
    return to_xml(root)


def snapshot_domain_files(xml: str) -> set[str]:
    """Files the definitions saved in a snapshot's XML use (what a revert would open)."""
    root = parse_xml(xml)
    files: set[str] = set()
    for tag in ("domain", "inactiveDomain"):
        domain = root.find(tag)
        if domain is not None:
            files |= {d.path for d in disk_files(to_xml(domain)) if d.writable and d.path}
    return files


def snapshots_with_xml(ref: str) -> tuple[list[SnapshotInfo], str]:
    """Every snapshot, its ``xml`` read with secrets (for redefining), and the current one's name."""

    def run(conn):
        dom = _domain(conn, ref)
        infos = [_snapshot_info(snap, libvirt.VIR_DOMAIN_XML_SECURE) for snap in dom.listAllSnapshots(0)]
        current = _current_name(dom)
        return infos, current

    return _call(run)
