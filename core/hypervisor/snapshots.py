"""A VM's snapshots in libvirt: list, read, take, revert, delete, redefine, and the
orders a tree is walked in.

Never ``VIR_DOMAIN_SNAPSHOT_DELETE_CHILDREN``: on libvirt 9.0 it crashes libvirtd.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import libvirt
from lxml import etree

from core.errors import Conflict
from core.hypervisor.connection import call
from core.hypervisor.domains import current_name, domain
from core.hypervisor.xml import parse_xml, text, to_xml


@dataclass(frozen=True)
class SnapshotInfo:
    name: str  # libvirt's (immutable) name
    description: str
    state: str
    created: int
    parent: str  # libvirt name of the parent, "" for a root
    memory: bool = False
    xml: str = field(default="", repr=False, compare=False)


def _info(snap: libvirt.virDomainSnapshot, flags: int = 0) -> SnapshotInfo:
    xml = snap.getXMLDesc(flags)
    root = parse_xml(xml)
    memory = root.find("memory")
    return SnapshotInfo(
        name=text(root, "name"),
        description=text(root, "description"),
        state=text(root, "state", "nostate"),
        created=int(text(root, "creationTime", "0")),
        parent=text(root, "parent/name"),
        memory=memory is not None and memory.get("snapshot") == "internal",
        xml=xml,
    )


def snapshot_names(ref: str, *, current: str | None = None) -> tuple[list[str], str]:
    """(every snapshot's libvirt name, the current one or ""); pass ``current`` when it
    is known already (a VMInfo holds it) to save the call."""

    def run(conn):
        dom = domain(conn, ref)
        names = [snap.getName() for snap in dom.listAllSnapshots(0)]
        return names, current_name(dom) if current is None else current

    return call(run)


def get_snapshot(ref: str, name: str) -> SnapshotInfo:
    return call(lambda conn: _info(domain(conn, ref).snapshotLookupByName(name)))


def get_snapshots(ref: str, names: list[str]) -> list[SnapshotInfo]:
    """Details of the given snapshots (one XML read each); vanished ones are skipped."""

    def run(conn):
        dom = domain(conn, ref)
        found = []
        for name in names:
            try:
                found.append(_info(dom.snapshotLookupByName(name)))
            except libvirt.libvirtError as exc:
                if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN_SNAPSHOT:
                    raise
        return found

    return call(run)


def snapshot_xml(ref: str, name: str) -> str:
    """One snapshot's XML as libvirt keeps it, secrets included."""
    return call(lambda conn: domain(conn, ref).snapshotLookupByName(name).getXMLDesc(libvirt.VIR_DOMAIN_XML_SECURE))


def snapshots_with_xml(ref: str) -> tuple[list[SnapshotInfo], str]:
    """Every snapshot, its ``xml`` read with secrets (for redefining), and the current one's name."""

    def run(conn):
        dom = domain(conn, ref)
        infos = [_info(snap, libvirt.VIR_DOMAIN_XML_SECURE) for snap in dom.listAllSnapshots(0)]
        return infos, current_name(dom)

    return call(run)


def create_snapshot(ref: str, name: str, description: str = "") -> SnapshotInfo:
    """Take an internal snapshot: memory and disks of a running VM, disks of a shut-off one.

    Three calls: look the VM up, take it, read what libvirt made. A name libvirt
    already has is a Conflict (nothing was taken).
    """
    root = etree.Element("domainsnapshot")
    etree.SubElement(root, "name").text = name
    if description:
        etree.SubElement(root, "description").text = description

    def run(conn):
        dom = domain(conn, ref)
        try:
            snap = dom.snapshotCreateXML(to_xml(root), 0)
        except libvirt.libvirtError as exc:
            if "already exists" in (exc.get_error_message() or ""):
                raise Conflict(f"libvirt already has a snapshot named {name!r} on this VM: nothing was taken.") from exc
            raise
        return _info(snap)

    return call(run, changes=f"taking snapshot {name}")


def revert_snapshot(ref: str, name: str) -> None:
    def run(conn):
        dom = domain(conn, ref)
        dom.revertToSnapshot(dom.snapshotLookupByName(name), 0)

    call(run, changes=f"reverting to snapshot {name}")


def delete_snapshot(ref: str, name: str) -> None:
    """Delete one snapshot; its children move under its parent."""
    call(lambda conn: domain(conn, ref).snapshotLookupByName(name).delete(0), changes=f"deleting snapshot {name}")


def redefine_snapshot(ref: str, xml: str, *, current: bool = False) -> None:
    """Re-create a snapshot's metadata (its data already sits in the qcow2 disks)."""
    flags = libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_REDEFINE
    if current:
        flags |= libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_CURRENT
    call(lambda conn: domain(conn, ref).snapshotCreateXML(xml, flags), changes="redefining a snapshot")


# ---------------------------------------------------------------------------
# Orders


def depths(parents: dict[str, str]) -> dict[str, int]:
    """Depth of each snapshot ({name: parent name}) in its tree, roots 0, without
    recursion (chains may be thousands deep); a parent not in the map counts as none."""
    depth: dict[str, int] = {}
    for name in parents:
        chain = []
        node = name
        while node in parents and node not in depth and node not in chain:
            chain.append(node)
            node = parents[node]
        base = depth.get(node, -1) if node in parents else -1
        for offset, item in enumerate(reversed(chain), start=1):
            depth[item] = base + offset
    return depth


def parents_first(infos: Iterable[SnapshotInfo]) -> list[SnapshotInfo]:
    """Every snapshot after its parent (for redefining them), older first among equals."""
    infos = list(infos)
    depth = depths({i.name: i.parent for i in infos})
    return sorted(infos, key=lambda i: (depth[i.name], i.created, i.name))


def creation_order(infos: Iterable[SnapshotInfo]) -> list[SnapshotInfo]:
    """Oldest first; within one second (libvirt's resolution) a parent before its
    children, then by name: never libvirt's listing order, which is a hash order that
    changes when libvirtd restarts."""
    infos = list(infos)
    depth = depths({i.name: i.parent for i in infos})
    return sorted(infos, key=lambda i: (i.created, depth[i.name], i.name))


def leaves_first(infos: Iterable[SnapshotInfo]) -> list[SnapshotInfo]:
    """Every snapshot before its parent: a descendant is always deeper than its ancestor."""
    infos = list(infos)
    depth = depths({i.name: i.parent for i in infos})
    return sorted(infos, key=lambda i: (-depth[i.name], -i.created, i.name))
