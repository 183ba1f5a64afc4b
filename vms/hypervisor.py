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

from vms.errors import AppError, Conflict, Failed, Invalid, NotFound, Unavailable

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


def _call(fn: Callable[[libvirt.virConnect], T]) -> T:
    """Run ``fn(conn)``; reconnect once if the connection broke; map errors."""
    conn = _open()
    try:
        return fn(conn)
    except libvirt.libvirtError as exc:
        if not _is_broken(exc):
            raise _map_error(exc) from exc
    _reset()
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

    @property
    def is_active(self) -> bool:
        return self.state not in ("shutoff", "crashed")

    @property
    def busy_saving(self) -> bool:
        """QEMU is writing an internal snapshot right now (guest paused for it)."""
        # libvirt 9.0 reports "paused (saving)" during savevm; newer ones "snapshot".
        saving = (libvirt.VIR_DOMAIN_PAUSED_SNAPSHOT, libvirt.VIR_DOMAIN_PAUSED_SAVE)
        return self.state == "paused" and self.state_reason in saving


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


def _vm_info(dom: libvirt.virDomain, *, xml: str | None = None) -> VMInfo:
    state, reason = dom.state()
    root = parse_xml(xml or dom.XMLDesc(0))
    memory_kib = int(_text(root, "memory", "0"))
    unit = root.find("memory").get("unit", "KiB") if root.find("memory") is not None else "KiB"
    memory_mib = _to_mib(memory_kib, unit)
    try:
        current = dom.snapshotCurrent().getName()
    except libvirt.libvirtError as exc:
        if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN_SNAPSHOT:
            raise
        current = ""
    loader = root.find("os/loader")
    pflash = (loader is not None and loader.get("type") == "pflash") or root.find("os").get("firmware") == "efi"
    return VMInfo(
        name=dom.name(),
        uuid=dom.UUIDString(),
        state=STATE_WORDS.get(state, "nostate"),
        state_reason=reason,
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
    try:
        uuidlib.UUID(ref)
    except ValueError:
        return conn.lookupByName(ref)
    return conn.lookupByUUIDString(ref)


def _snapshot_info(snap: libvirt.virDomainSnapshot) -> SnapshotInfo:
    xml = snap.getXMLDesc(0)
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
    return _call(lambda conn: _vm_info(conn.defineXML(xml)))


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
    _call(lambda conn: _domain(conn, ref).undefineFlags(flags))


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

    _call(run)


# ---------------------------------------------------------------------------
# Snapshots


def snapshot_names(ref: str) -> tuple[list[str], str]:
    """(every snapshot's libvirt name, the current one or "") in two calls."""

    def run(conn):
        dom = _domain(conn, ref)
        names = [snap.getName() for snap in dom.listAllSnapshots(0)]
        try:
            current = dom.snapshotCurrent().getName()
        except libvirt.libvirtError as exc:
            if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN_SNAPSHOT:
                raise
            current = ""
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

    return _call(run)


def revert_snapshot(ref: str, name: str) -> None:
    def run(conn):
        dom = _domain(conn, ref)
        dom.revertToSnapshot(dom.snapshotLookupByName(name), 0)

    _call(run)


def delete_snapshot(ref: str, name: str) -> None:
    """Delete one snapshot; its children move under its parent.

    Never VIR_DOMAIN_SNAPSHOT_DELETE_CHILDREN: on libvirt 9.0 it crashes libvirtd.
    """
    _call(lambda conn: _domain(conn, ref).snapshotLookupByName(name).delete(0))


def redefine_snapshot(ref: str, xml: str, *, current: bool = False) -> None:
    """Re-create a snapshot's metadata (its data already sits in the qcow2 disks)."""
    flags = libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_REDEFINE
    if current:
        flags |= libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_CURRENT
    _call(lambda conn: _domain(conn, ref).snapshotCreateXML(xml, flags))


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
