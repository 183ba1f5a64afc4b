"""A clone's identity written into domain and snapshot XML: new name, UUID, MAC
addresses, disk and NVRAM paths; everything else is kept."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from lxml import etree

from core.hypervisor.xml import disks_of, parse_xml, to_xml

# libvirt's own prefix for QEMU/KVM guests' MAC addresses.
MAC_PREFIX = (0x52, 0x54, 0x00)


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
            files |= {d.path for d in disks_of(to_xml(domain)) if d.writable and d.path}
    return files
